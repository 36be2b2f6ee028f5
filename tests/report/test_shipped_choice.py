"""Which runtime deploy ships: the fastest one that meets the one budget figure, judged on the
interleaved measurements."""



from edgeprune.candidate.paired import Paired
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.stats import LatencyStats
from edgeprune.report.manifest import DeployRecord
from edgeprune.search.config import Budget
from edgeprune.search.trace import SearchTrace
from edgeprune.deploy import DeployConfig


def _paired(runtime: str, ms: float, baseline_ms: float) -> Paired:
    def m(v: float) -> Measurement:
        return Measurement(LatencyStats.from_samples([v] * 3, 1, f"measured:{runtime}-local"), "cpu")
    return Paired((ms,) * 3, (baseline_ms,) * 3, m(ms), m(baseline_ms))


def _record(budget: Budget, trace: SearchTrace, paired: dict[str, Paired]) -> DeployRecord:
    return DeployRecord(DeployConfig(budget=budget), None, None, None, None, {}, {}, paired,  # type: ignore[arg-type]
                        (None, None), trace, {})  # type: ignore[arg-type]


def test_fastest_runtime_meeting_the_budget_is_shipped():
    trace = SearchTrace("onnxruntime", 1.0, 2.0)
    rec = _record(Budget(ms=2.0), trace, {"onnxruntime": _paired("onnxruntime", 0.7, 1.0), "tvm": _paired("tvm", 1.9, 6.0)})
    assert rec.shipped() == "onnxruntime"


def test_a_slower_runtime_never_wins_on_its_own_slower_baseline():
    """ORT misses a 0.5 ms budget at 0.7 ms; TVM at 1.9 ms misses it too (though 0.3x its own
    baseline): ship the faster."""
    trace = SearchTrace("onnxruntime", 1.0, 0.5)
    rec = _record(Budget(ratio=0.5), trace, {"onnxruntime": _paired("onnxruntime", 0.7, 1.0), "tvm": _paired("tvm", 1.9, 6.0)})
    assert rec.shipped() == "onnxruntime"
    assert not rec.meets("onnxruntime") and not rec.meets("tvm")


def test_only_the_runtime_that_meets_the_budget_is_shipped():
    trace = SearchTrace("onnxruntime", 1.0, 0.5)
    rec = _record(Budget(ms=0.5), trace, {"onnxruntime": _paired("onnxruntime", 0.7, 1.0), "tvm": _paired("tvm", 0.45, 6.0)})
    assert rec.shipped() == "tvm"


def test_relative_budget_is_judged_on_the_interleaved_ratio():
    """The machine slowed down in the final rounds (baseline 1.0 -> 1.6 ms): the candidate at
    0.8 ms absolute misses 0.5 ms, but it is 0.5x its baseline timed beside it, so it meets 0.5x."""
    trace = SearchTrace("onnxruntime", 1.0, 0.5)
    rec = _record(Budget(ratio=0.5), trace, {"onnxruntime": _paired("onnxruntime", 0.8, 1.6)})
    assert rec.meets("onnxruntime")
