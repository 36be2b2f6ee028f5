"""Which runtimes the result stage builds again."""

from __future__ import annotations

from edgeprune.deploy.runtimes import CLEARLY_SLOWER, result_runtimes


def test_a_runtime_that_lost_the_baseline_by_more_than_the_factor_is_not_rebuilt():
    keep, skipped = result_runtimes({"onnxruntime": 1.0, "tvm": 2.6}, "onnxruntime")
    assert keep == ["onnxruntime"]
    assert "2.6x onnxruntime" in skipped["tvm"] and "--runtime tvm" in skipped["tvm"]


def test_close_runtimes_and_the_search_runtime_are_always_rebuilt():
    keep, skipped = result_runtimes({"onnxruntime": 1.0, "tvm": CLEARLY_SLOWER * 0.99}, "onnxruntime")
    assert keep == ["onnxruntime", "tvm"] and skipped == {}
    # the search runtime stays even when it is the slower one (a resumed run keeps its runtime)
    keep, skipped = result_runtimes({"onnxruntime": 5.0, "tvm": 1.0}, "onnxruntime")
    assert "onnxruntime" in keep and skipped == {}
