"""Which runtime deploy ships: the fastest one that meets the one budget figure."""

from pathlib import Path

from edgeprune.artifact import Artifact
from edgeprune.deploy import Measured, _choose_shipped
from edgeprune.candidate.evaluator import RuntimeResult
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.stats import LatencyStats
from edgeprune.candidate.validate import ValidationResult


def _measured(runtime: str, ms: float) -> Measured:
    artifact = Artifact(runtime, "host", (Path(f"{runtime}.bin"),), (1, 1, 32, 32))
    latency = LatencyStats.from_samples([ms] * 3, 1, f"measured:{runtime}-local")
    validation = ValidationResult(0.9, 0.9, 0.0, 1.0, 10, {"atol": 1e-3, "rtol": 1e-3})
    return Measured(RuntimeResult(artifact, Measurement(latency, "cpu")), validation)


def test_fastest_runtime_meeting_the_budget_is_shipped():
    after = {"onnxruntime": _measured("onnxruntime", 0.7), "tvm": _measured("tvm", 1.9)}
    assert _choose_shipped(after, budget_ms=2.0) == "onnxruntime"


def test_a_slower_runtime_never_wins_on_its_own_slower_baseline():
    """ORT misses a 0.5 ms budget at 0.7 ms; TVM at 1.9 ms misses it too: ship the faster."""
    after = {"onnxruntime": _measured("onnxruntime", 0.7), "tvm": _measured("tvm", 1.9)}
    assert _choose_shipped(after, budget_ms=0.5) == "onnxruntime"


def test_only_the_runtime_that_meets_the_budget_is_shipped():
    after = {"onnxruntime": _measured("onnxruntime", 0.7), "tvm": _measured("tvm", 0.45)}
    assert _choose_shipped(after, budget_ms=0.5) == "tvm"
