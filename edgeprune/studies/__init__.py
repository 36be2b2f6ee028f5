"""The criteria-vs-oracle study: ``oracle`` (ΔL, rank correlations), ``accuracy`` (accuracy at a
pruning ratio, fine-tune), ``compare`` (the measurements), ``study`` (StudyConfig, run_study),
``tables`` and ``plots`` (the report)."""
