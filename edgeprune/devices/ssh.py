"""``--device ssh://USER@HOST[:PORT]``: any board with sshd. The artifact is copied there and a
benchmark runs there; host keys are always checked (``--ssh-known-hosts``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from edgeprune.devices import register_measurer, schemes
from edgeprune.devices.base import DeviceOptions, bracket, host_port
from edgeprune.devices.reach import Reach
from edgeprune.errors import ConfigError

FORMS = "ssh://USER@HOST[:PORT]"


@schemes.register("ssh")
class SshScheme:
    name = "ssh"
    forms = FORMS
    user_facing = True
    remote = True

    def parse(self, text: str) -> Reach:
        """The user is required so no one logs in by accident as root."""
        parts = urlsplit(text)
        if not parts.username:
            raise ConfigError(f"--device {text!r} needs a user: {FORMS}")
        if parts.password is not None:
            raise ConfigError(f"--device {text!r}: put no password in the URL; edgeprune uses SSH keys")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ConfigError(f"--device {text!r}: ssh takes no path; use {FORMS}")
        host, port = host_port(text, 22, FORMS)
        return Reach(mode="ssh", host=host, port=port, user=parts.username)

    def check(self, reach: Reach) -> None:
        if reach.key:
            raise ValueError("reach mode 'ssh' takes no key")

    def describe(self, reach: Reach) -> str:
        text = f"ssh://{reach.user or 'USER'}@{bracket(reach.host or 'HOST')}"
        return text + (f":{reach.port}" if reach.port else "")

    def probe_port(self, reach: Reach) -> int | None:
        return reach.port or 22


@register_measurer("ssh", "onnxruntime")
def _onnxruntime_over_ssh(reach: Reach, runtime: str, target, options: DeviceOptions):
    from edgeprune.profilers.ssh import SshRunner

    return SshRunner(reach, known_hosts=options.known_hosts, identity_file=options.identity_file,
                     python=options.python, power=target.power_measurement)
