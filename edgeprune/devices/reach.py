"""Where a board is: the parsed form of ``--device`` (and of a target YAML's ``reach`` section).

The fields are generic (host, port, key, user); which combinations make sense is the business of
the scheme registered under ``mode`` (:mod:`edgeprune.devices`), so a new way to reach boards
adds a scheme module and never edits this class.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Reach(BaseModel):
    """How the board is reached: ``mode`` names a registered device scheme (``local``, ``rpc``,
    ``ssh``, ``none`` for "no board: estimate"). A shipped board YAML may leave ``host`` empty: the
    user's ``--device`` supplies it (see :func:`edgeprune.devices.resolve_reach`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: str = "local"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Reach":
        """Reject combinations the scheme cannot mean, so a YAML typo is caught at load time."""
        from edgeprune.devices import get_scheme

        scheme = get_scheme(self.mode, ValueError)
        scheme.check(self)
        return self

    @property
    def is_tracker(self) -> bool:
        """RPC through a tracker (a key names the device class) rather than one server."""
        return self.mode == "rpc" and bool(self.key)

    def describe(self) -> str:
        """The ``--device`` spelling of this reach, for logs and device labels."""
        from edgeprune.devices import get_scheme

        return get_scheme(self.mode).describe(self)
