"""The TVM backend against real TVM: numerics, compiled-library cache, tuning-database reuse,
speed-up from pruning, typed errors. Tiny models keep each compile to seconds; the tuning tests
are marked slow. Board (foreign-architecture) targets: test_tvm_targets.py."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.backends import CompileOptions, get_backend
from edgeprune.backends.tvm import (
    COMPILED_SUBDIR,
    TUNING_SUBDIR,
    UNTUNED_NOTE,
    resolve_target,
    tuning_db_dir,
)
from edgeprune.errors import CompileError, TraceError
from edgeprune.models.demo_net import build_demo_net
from edgeprune.profilers import MeasureSettings
from tests.nets import untraceable

pytest.importorskip("tvm")

HOST = {"kind": "llvm", "mcpu": "auto"}


def _options(tmp_path, trials: int = 0) -> CompileOptions:
    return CompileOptions("host", dict(HOST), tmp_path / "cache", tune_trials=trials)


def _assert_matches(backend, artifact, model: nn.Module) -> None:
    x = torch.rand(*artifact.input_shape)
    got = backend.load(artifact)(x.numpy())
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def untuned(tmp_path_factory):
    """One untuned compile of the tiny demo net, shared: each compile costs seconds."""
    torch.manual_seed(0)
    model = build_demo_net(width=8).eval()
    tmp = tmp_path_factory.mktemp("tvm-untuned")
    options = _options(tmp)
    artifact = get_backend("tvm").compile(model, torch.rand(1, 1, 32, 32), tmp / "out", options)
    return model, artifact, options


def test_untuned_artifact_matches_pytorch_and_says_untuned(untuned):
    backend = get_backend("tvm")
    tiny_net, artifact, _ = untuned
    _assert_matches(backend, artifact, tiny_net)
    assert artifact.runtime == "tvm" and artifact.path.name == "model.so"
    assert artifact.meta["tuned"] is False and artifact.meta["new_trials"] == 0
    assert artifact.meta["note"] == UNTUNED_NOTE and artifact.meta["compile_cache"] == "miss"
    assert backend.runs_here(artifact)
    sidecar = json.loads(artifact.files[1].read_text())
    assert sidecar["input_shape"] == [1, 1, 32, 32] and sidecar["tuned"] is False
    assert sidecar["tvm_target"]["mcpu"] != "auto"


def test_recompiling_the_same_model_reuses_the_cached_library(untuned, tmp_path):
    backend = get_backend("tvm")
    tiny_net, first, options = untuned
    again = backend.compile(tiny_net, torch.rand(1, 1, 32, 32), tmp_path / "again", options)
    assert again.meta["compile_cache"] == "hit"
    assert again.path.read_bytes() == first.path.read_bytes() and again.path != first.path
    assert json.loads(again.files[1].read_text())["compile_cache"] == "hit"
    _assert_matches(backend, again, tiny_net)
    entries = list((options.cache_dir / COMPILED_SUBDIR).iterdir())
    assert [e.name for e in entries if e.name.startswith(".")] == []  # no staging left behind
    assert len(entries) == 1 and (entries[0] / "model.so").read_bytes() == first.path.read_bytes()


def test_changed_weights_miss_the_cache_and_compile_their_own_library(untuned, tmp_path):
    """Pruning keeps graphs alike but changes weights: a stale library would compute the old
    model, so the weights are part of the key, not just the graph."""
    backend = get_backend("tvm")
    tiny_net, first, options = untuned
    changed = copy.deepcopy(tiny_net)
    with torch.no_grad():
        changed.fc.bias += 1.0
    art = backend.compile(changed, torch.rand(1, 1, 32, 32), tmp_path / "changed", options)
    assert art.meta["compile_cache"] == "miss"
    _assert_matches(backend, art, changed)
    assert len(list((options.cache_dir / COMPILED_SUBDIR).glob("[!.]*"))) >= 2


def test_failed_compile_leaves_no_cache_entry(example, tmp_path):
    options = _options(tmp_path)
    with pytest.raises(CompileError):
        get_backend("tvm").compile(_KthValue(), example, tmp_path / "x", options)
    assert list((options.cache_dir / COMPILED_SUBDIR).glob("*")) == []


def test_batched_artifact_runs_its_batch_size(tiny_net, tmp_path):
    backend = get_backend("tvm")
    artifact = backend.compile(tiny_net, torch.rand(4, 1, 32, 32), tmp_path / "b4",
                               _options(tmp_path))
    _assert_matches(backend, artifact, tiny_net)
    with pytest.raises(ValueError, match="compiled for input"):
        backend.load(artifact)(np.zeros((1, 1, 32, 32), np.float32))


def test_measure_labels_source_threads_and_energy(untuned):
    backend = get_backend("tvm")
    _, artifact, _ = untuned
    affinity = os.sched_getaffinity(0)
    m = backend.measure(artifact, MeasureSettings(warmup=2, repeats=5, min_repeat_ms=1, threads=1))
    assert m.latency.source == "measured:tvm-local" and m.latency.repeats == 5
    assert 0 < m.latency.min <= m.latency.median <= m.latency.max
    assert m.details["tvm_threads"] == 1 and "1 threads" in m.device
    assert m.energy is None and m.energy_note
    assert os.sched_getaffinity(0) == affinity  # TVM's thread pinning does not leak out


def test_auto_target_names_this_cpu_and_keeps_cross_targets():
    host = resolve_target(HOST, threads=3)
    assert host["num-cores"] == 3 and host.get("mcpu", "auto") != "auto"
    arm = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4}
    if os.uname().machine != "aarch64":
        assert resolve_target(arm, threads=2) == arm


def test_untraceable_model_raises_trace_error_naming_the_line(example, tmp_path):
    with pytest.raises(TraceError, match=r"nets\.py:\d+"):
        get_backend("tvm").compile(untraceable(), example, tmp_path / "x", _options(tmp_path))


class _KthValue(nn.Module):
    """kthvalue exports fine but TVM's PyTorch frontend has no converter for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).kthvalue(3, dim=1).values


def test_op_without_tvm_converter_raises_compile_error_naming_it(example, tmp_path):
    with pytest.raises(CompileError, match="kthvalue"):
        get_backend("tvm").compile(_KthValue(), example, tmp_path / "x", _options(tmp_path))


@pytest.mark.slow
def test_tuning_fills_a_database_that_a_variant_with_the_same_shapes_reuses(tiny_net, example,
                                                                           tmp_path):
    """Other weights, same layer shapes (a fine-tuned or re-pruned model): the compiled-library
    cache misses, but every kernel is covered by the tuning ledger, so nothing is measured."""
    backend = get_backend("tvm")
    options = _options(tmp_path, trials=20)
    first = backend.compile(tiny_net, example, tmp_path / "first", options)
    assert first.meta["tuned"] is True and first.meta["new_trials"] > 0
    assert "note" not in first.meta or first.meta["note"].startswith("partly tuned")
    db = tuning_db_dir(options.cache_dir, json.loads(first.meta["tvm_target"]))
    assert db.parent.name == TUNING_SUBDIR and (db / "database_tuning_record.json").stat().st_size
    _assert_matches(backend, first, tiny_net)

    torch.manual_seed(1)
    variant = build_demo_net(width=8).eval()
    again = backend.compile(variant, example, tmp_path / "again", options)
    assert again.meta["compile_cache"] == "miss"
    assert again.meta["tuned"] is True and again.meta["new_trials"] == 0
    assert again.meta["tuning_seconds"] < 0.25 * first.meta["tuning_seconds"]
    assert again.meta["database"] == first.meta["database"]
    _assert_matches(backend, again, variant)


@pytest.mark.slow
def test_a_pruned_variant_gets_tuned_for_its_own_workloads(example, tmp_path):
    """Width 32 vs 16: the narrower net has other kernel shapes, so the shared database does not
    cover it and it is tuned itself (whether it is faster is a benchmark's question:
    bench/bench_runtimes.py, never a timed unit test)."""
    backend = get_backend("tvm")
    artifacts = {}
    for width in (32, 16):
        torch.manual_seed(0)
        model = build_demo_net(width=width).eval()
        artifacts[width] = backend.compile(model, example, tmp_path / f"w{width}", _options(tmp_path, 40))
        assert artifacts[width].meta["tuned"] is True
    assert artifacts[16].meta["new_trials"] > 0  # its workloads were not in the database yet
    assert artifacts[16].path.read_bytes() != artifacts[32].path.read_bytes()
