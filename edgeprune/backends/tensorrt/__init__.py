"""TensorRT for the Jetsons: trtexec command lines and parsers, the SSH board flow, the backend.

Importing this package registers the ``tensorrt`` runtime (``edgeprune.backends.load_builtin``
imports it). Nothing here imports TensorRT at module level: it exists only on the boards and on
GPU hosts.
"""

from edgeprune.backends.tensorrt.backend import TensorRtBackend
from edgeprune.backends.tensorrt.board import BoardTools, JetsonTrtRunner, jetson_measurer
from edgeprune.backends.tensorrt.trtexec import EngineFiles, RunSettings
from edgeprune.backends.tensorrt.versions import RELEASES, TrtRelease, check_precision, release_for
from edgeprune.devices import register_measurer

register_measurer("ssh", "tensorrt")(jetson_measurer)  # a Jetson reached over SSH builds and times with trtexec

__all__ = ["RELEASES", "BoardTools", "EngineFiles", "JetsonTrtRunner", "RunSettings", "TensorRtBackend",
           "TrtRelease", "check_precision", "jetson_measurer", "release_for"]
