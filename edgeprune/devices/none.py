"""Mode ``none``: a board target with no board at hand. Figures are roofline *estimates* from
the target YAML's peak compute and bandwidth, labelled ``estimate:roofline`` wherever they appear.
Not a ``--device`` spelling: deploy picks it when a board target names no host."""

from __future__ import annotations

from edgeprune.devices import register_measurer, schemes
from edgeprune.devices.base import DeviceOptions
from edgeprune.devices.reach import Reach


@schemes.register("none")
class NoBoardScheme:
    name = "none"
    forms = "(no board)"
    user_facing = False
    remote = False

    def parse(self, text: str) -> Reach:
        return Reach(mode="none")

    def check(self, reach: Reach) -> None:
        if reach.host or reach.port or reach.key or reach.user:
            raise ValueError("reach mode 'none' takes no host/port/key/user")

    def describe(self, reach: Reach) -> str:
        return "none (no board: estimates)"

    def probe_port(self, reach: Reach) -> int | None:
        return None


@register_measurer("none")
def _roofline(reach: Reach, runtime: str, target, options: DeviceOptions):
    from edgeprune.profilers.roofline import RooflineProfiler

    return RooflineProfiler(target)
