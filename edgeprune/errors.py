"""Typed errors. Each carries the one-line reason and the exit code the CLI returns.

The CLI catches :class:`EdgepruneError` and prints ``error: <message>`` with no traceback, so
every user-facing failure must be raised as one of these (never a bare ``RuntimeError``).
"""

from __future__ import annotations


class EdgepruneError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(EdgepruneError):
    """A flag or config value is malformed (bad budget string, bad input shape, ...)."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A registry lookup (target, criterion, runtime, ...) found no such name."""


class ModelLoadError(EdgepruneError):
    """The model spec does not resolve, or its checkpoint cannot be loaded."""

    exit_code = 3


class UntrustedCheckpointError(ModelLoadError):
    """The checkpoint needs pickle (``weights_only=False``) and the user did not opt in."""


class TraceError(EdgepruneError):
    """``torch.export`` (or dependency-graph tracing) cannot follow the model."""

    exit_code = 4


class DataError(EdgepruneError):
    """The data set is missing, empty or unreadable."""

    exit_code = 5


class BudgetError(EdgepruneError):
    """The latency budget cannot be met; the message states the best figure reached."""

    exit_code = 6


class CompileError(EdgepruneError):
    """Export or compilation for the target failed."""

    exit_code = 7


class ValidationError(CompileError):
    """The compiled artifact disagrees with the PyTorch model beyond the stated tolerance."""


class OutputError(EdgepruneError):
    """The output directory cannot be written."""

    exit_code = 8


class ToolchainMissingError(EdgepruneError):
    """A backend's toolchain (TVM, ONNX Runtime, ...) is not installed."""

    exit_code = 9


class DeviceError(EdgepruneError):
    """The device (board, RPC server, SSH host) cannot be reached or dropped mid-run."""

    exit_code = 10
