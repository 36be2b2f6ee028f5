"""``--device local``: this machine. Every backend measures its own artifacts here."""

from __future__ import annotations

from edgeprune.devices import register_measurer, schemes
from edgeprune.devices.base import DeviceOptions
from edgeprune.devices.reach import Reach


@schemes.register("local")
class LocalScheme:
    name = "local"
    forms = "local"
    user_facing = True
    remote = False

    def parse(self, text: str) -> Reach:
        return Reach(mode="local")

    def check(self, reach: Reach) -> None:
        if reach.host or reach.port or reach.key or reach.user:
            raise ValueError("reach mode 'local' takes no host/port/key/user")

    def describe(self, reach: Reach) -> str:
        return "local"

    def probe_port(self, reach: Reach) -> int | None:
        return None


@register_measurer("local")
def _backend_itself(reach: Reach, runtime: str, target, options: DeviceOptions):
    """The backend's own ``measure`` times the artifact on this machine."""
    from edgeprune.backends import get_backend

    return get_backend(runtime)
