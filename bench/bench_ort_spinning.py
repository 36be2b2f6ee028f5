"""ONNX Runtime sessions side by side: spinning vs blocking intra-op pools (docs/measurement.md).

Times the demo net against itself and a half-width demo net against it, interleaved call block by
call block (edgeprune's paired measurement), once with ONNX Runtime's default spinning pools and
once with ``session.intra_op.allow_spinning=0`` (what edgeprune uses). Prints ratios and medians.

    python bench/bench_ort_spinning.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from edgeprune.backends.onnx_export import export_onnx
from edgeprune.candidate.paired import measure_interleaved
from edgeprune.models.demo_net import build_demo_net
from edgeprune.profilers.base import MeasureSettings

Timer = tuple[Callable[[], object], str, str]


def _timer(path: Path, spin: bool) -> Timer:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    return (lambda: sess.run(None, {name: x})), "measured:onnxruntime-local", "host"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print("load average:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for width in (48, 32):
            torch.manual_seed(0)
            paths[width] = Path(tmp) / f"demo{width}.onnx"
            export_onnx(build_demo_net(width=width).eval(), torch.rand(1, 1, 32, 32), paths[width])
        settings = MeasureSettings(repeats=10)
        print("| pools | pair | ratio (IQR) | reference median ms | candidate median ms |")
        print("|---|---|---|---|---|")
        for spin in (True, False):
            for label, cand in (("48 vs 48", 48), ("32 vs 48", 32)):
                p = measure_interleaved(lambda: _timer(paths[cand], spin), lambda: _timer(paths[48], spin),
                                        settings, None, args.rounds, args.rounds)
                lo, hi = p.spread()
                print(f"| {'spinning' if spin else 'blocking'} | {label} | {p.ratio:.3f} ({lo:.3f}-{hi:.3f}) | "
                      f"{np.median(p.reference_ms):.3f} | {np.median(p.candidate_ms):.3f} |", flush=True)


if __name__ == "__main__":
    main()
