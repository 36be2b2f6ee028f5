"""Stand-alone ONNX Runtime benchmark that the SSH runner copies to a board and runs there.

It must run on a board that has only Python 3, numpy and onnxruntime: it imports nothing from
edgeprune, and it stays Python 3.6 compatible (JetPack 4.6 on the Jetson Nano ships 3.6), hence
``typing.Optional``. It times the model on the board (so the network is not in the figure) with
the same discipline as ``edgeprune.profilers.stats.time_callable``, optionally samples the board's power
while the timed loop runs, and prints one JSON object on its last stdout line:

``{"samples_ms": [...], "warmup": W, "number": N, "onnxruntime": "1.x", "machine": "...",
"threads": T, "power": {...} | null}``

Power samples are returned raw (tegrastats lines, RAPL readings, a PYNQ DataRecorder CSV); the
runner parses them with :mod:`edgeprune.profilers.energy`, so the parsing is tested off-board.
"""

# ruff: noqa: UP006, UP035, UP045 - typing.List/Optional on purpose: this file must run on Python 3.6
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

RAPL = Path("/sys/class/powercap/intel-rapl:0")


def _machine() -> str:
    """``<cpu model> (<arch>), <n> cpus`` so two boards' numbers can be told apart."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({platform.machine()}), {os.cpu_count()} cpus"


def _session(model: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]), ort.__version__


class _Power:
    """Samples one power source around the timed loop; ``result()`` is the raw record."""

    def __init__(self, spec: str) -> None:
        self.method, _, self.rail = spec.partition(":")
        self.error = ""
        self.proc = None  # type: Optional[subprocess.Popen]
        self.recorder = None
        self.start_uj = 0
        self.t0 = 0.0

    def start(self) -> None:
        """Begin sampling; a missing counter is recorded, never fatal (latency still counts)."""
        self.error = ""
        try:
            self._start()
        except Exception as exc:  # noqa: BLE001 - any sampler failure only costs the energy figure
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self, inferences: int) -> Optional[dict]:
        """The raw power record, or the reason there is none."""
        if self.error:
            return {"method": self.method, "error": self.error}
        try:
            return self._result(inferences)
        except Exception as exc:  # noqa: BLE001
            return {"method": self.method, "error": f"{type(exc).__name__}: {exc}"}

    def _start(self) -> None:
        self.t0 = time.perf_counter()
        if self.method == "tegrastats":
            self.proc = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, universal_newlines=True)
        elif self.method == "rapl":
            self.start_uj = int((RAPL / "energy_uj").read_text())
        elif self.method == "pynq-rails":
            import pynq

            self.recorder = pynq.DataRecorder(pynq.get_rails()[self.rail].power)
            self.recorder.record(0.05)

    def _result(self, inferences: int) -> Optional[dict]:
        elapsed = time.perf_counter() - self.t0
        if self.method == "tegrastats" and self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate(timeout=10)
            return {"method": "tegrastats", "rail": self.rail, "lines": out.splitlines()}
        if self.method == "rapl":
            return {"method": "rapl", "start_uj": self.start_uj,
                    "end_uj": int((RAPL / "energy_uj").read_text()),
                    "max_range_uj": int((RAPL / "max_energy_range_uj").read_text()),
                    "elapsed_s": elapsed, "inferences": inferences}
        if self.method == "pynq-rails" and self.recorder is not None:
            self.recorder.stop()
            return {"method": "pynq-rails", "rail": self.rail, "csv": self.recorder.frame.to_csv()}
        return None


def main(argv: Optional[List[str]] = None) -> int:
    """Parse flags, time the model, print the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="input shape, e.g. 1,3,224,224")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--min-repeat-ms", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    parser.add_argument("--power", default="none", help="none, rapl, tegrastats:RAIL or pynq-rails:RAIL")
    args = parser.parse_args(argv)

    import numpy as np

    sess, version = _session(args.model, args.threads)
    shape = tuple(int(d) for d in args.shape.split(","))
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).random(shape).astype(args.dtype)}

    def run() -> None:
        sess.run(None, feed)

    for _ in range(args.warmup):
        run()
    t0 = time.perf_counter()
    run()
    number = max(1, int(args.min_repeat_ms / 1e3 / max(time.perf_counter() - t0, 1e-7)))
    power = _Power(args.power)
    power.start()
    samples = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            run()
        samples.append((time.perf_counter() - t0) * 1e3 / number)
    record = {"samples_ms": samples, "warmup": args.warmup, "number": number, "onnxruntime": version,
              "machine": _machine(), "threads": args.threads or "default",
              "power": power.result(args.repeats * number)}
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
