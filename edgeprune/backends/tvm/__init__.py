"""Apache TVM backend, split by concern: target resolution, tuning, build, run."""

from edgeprune.backends.tvm.backend import *  # noqa: F401,F403 - re-export the backend's public API
from edgeprune.backends.tvm.backend import TVMBackend, is_host_target, resolve_target, usable_cores  # noqa: F401
