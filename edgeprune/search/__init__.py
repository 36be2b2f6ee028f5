"""The search: which channels go (planner), how big each step is (strategies), the measured loop,
its checkpoint and its trace."""
