"""``--device rpc://HOST:PORT`` (one TVM RPC server) or ``rpc://TRACKER:PORT/KEY`` (a tracker and
the device key): TVM's own board farm. Only TVM artifacts run there, so naming such a device is
enough to choose the runtime."""

from __future__ import annotations

from urllib.parse import urlsplit

from edgeprune.devices import register_measurer, schemes
from edgeprune.devices.base import DeviceOptions, bracket, host_port
from edgeprune.devices.reach import Reach
from edgeprune.errors import ConfigError

FORMS = "rpc://HOST:PORT or rpc://TRACKER_HOST:PORT/KEY"


@schemes.register("rpc")
class RpcScheme:
    name = "rpc"
    forms = FORMS
    user_facing = True
    remote = True

    def parse(self, text: str) -> Reach:
        """The port is required: trackers and servers have no default."""
        parts = urlsplit(text)
        if parts.username or parts.query or parts.fragment:
            raise ConfigError(f"--device {text!r}: rpc takes no user, query or fragment; use {FORMS}")
        host, port = host_port(text, None, FORMS)
        if port is None:
            raise ConfigError(f"--device {text!r} needs a port, e.g. rpc://{host}:9190/KEY")
        key = parts.path.strip("/")
        if "/" in key:
            raise ConfigError(f"--device {text!r}: the tracker key must be one path segment")
        return Reach(mode="rpc", host=host, port=port, key=key or None)

    def check(self, reach: Reach) -> None:
        if reach.user:
            raise ValueError("reach mode 'rpc' takes no user")
        if reach.host and reach.port is None:
            raise ValueError("reach mode 'rpc' with a host needs a port")

    def describe(self, reach: Reach) -> str:
        text = f"rpc://{bracket(reach.host or 'HOST')}:{reach.port or 'PORT'}"
        return text + (f"/{reach.key}" if reach.key else "")

    def probe_port(self, reach: Reach) -> int | None:
        return reach.port or 9190


@register_measurer("rpc", "tvm")
def _tvm_rpc(reach: Reach, runtime: str, target, options: DeviceOptions):
    from edgeprune.profilers.tvm_rpc import TvmRpcProfiler

    return TvmRpcProfiler(reach)
