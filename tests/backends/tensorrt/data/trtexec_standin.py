"""STAND-IN for trtexec, for the loopback SSH test only (this machine has no GPU and no TensorRT).

It accepts the flags edgeprune sends to trtexec and writes files in trtexec's JSON formats from
*real* work done here: the "engine" is a copy of the ONNX, inference runs with ONNX Runtime on the
CPU, ``--exportTimes`` records are this process's own timings of those runs, ``--exportProfile``
rows are ONNX Runtime's per-node profile. Formats follow TensorRT v10.3.0
samples/common/sampleReporting.cpp (exportJSONTrace, Profiler::exportJSONProfile). Layer info says
"Row major linear FP32" for every node because nothing chose another format. Never a benchmark.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def _session(path, profile=False):
    opts = ort.SessionOptions()
    opts.enable_profiling = profile
    opts.profile_file_prefix = os.path.join(os.path.dirname(os.path.abspath(path)), "ort_profile")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _feed(sess):
    inp = sess.get_inputs()[0]
    return {inp.name: np.random.default_rng(0).random(inp.shape, dtype=np.float32)}


def build(args):
    _session(args.onnx)  # fails like a parser would on a broken model
    shutil.copyfile(args.onnx, args.saveEngine)
    graph = onnx.load(args.onnx).graph
    layers = [{"Name": n.name, "LayerType": n.op_type,
               "Outputs": [{"Name": o, "Location": "Device", "Format/Datatype": "Row major linear FP32"}
                           for o in n.output]} for n in graph.node]
    with open(args.exportLayerInfo, "w") as f:
        json.dump({"Layers": layers, "Bindings": [i.name for i in graph.input] + [o.name for o in graph.output]}, f)


def timed(args):
    sess = _session(args.loadEngine)
    feed = _feed(sess)
    origin = time.perf_counter()
    now_ms = lambda: (time.perf_counter() - origin) * 1e3  # noqa: E731
    while now_ms() < args.warmUp:
        sess.run(None, feed)
    records = []
    bench_start = now_ms()
    while len(records) < args.iterations or now_ms() - bench_start < args.duration * 1e3:
        t0 = now_ms()
        sess.run(None, feed)
        t1 = now_ms()
        records.append({"startEnqMs": t0, "endEnqMs": t0, "startH2dMs": t0, "endH2dMs": t0,
                        "startComputeMs": t0, "endComputeMs": t1, "startD2hMs": t1, "endD2hMs": t1,
                        "h2dMs": 0, "computeMs": t1 - t0, "d2hMs": 0, "latencyMs": t1 - t0})
    with open(args.exportTimes, "w") as f:
        json.dump(records, f)


def profile(args):
    sess = _session(args.loadEngine, profile=True)
    feed = _feed(sess)
    for _ in range(args.iterations):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    totals = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            totals[name] = totals.get(name, 0.0) + e["dur"] / 1e3
    whole = sum(totals.values()) or 1.0
    rows = [{"count": args.iterations}] + [
        {"name": k, "timeMs": v, "averageMs": v / args.iterations, "medianMs": v / args.iterations,
         "percentage": v / whole * 100} for k, v in totals.items()]
    with open(args.exportProfile, "w") as f:
        json.dump(rows, f)


def main():
    p = argparse.ArgumentParser()
    for name in ("--onnx", "--saveEngine", "--loadEngine", "--exportTimes", "--exportProfile", "--exportLayerInfo"):
        p.add_argument(name)
    p.add_argument("--warmUp", type=float, default=200)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--duration", type=float, default=3)
    args, _unused = p.parse_known_args()  # precision/graph/percentile flags mean nothing on a CPU
    if args.onnx and args.saveEngine:
        build(args)
    elif args.exportTimes:
        timed(args)
    elif args.exportProfile:
        profile(args)
    else:
        sys.exit("stand-in trtexec: nothing to do")
    print("&&&& PASSED TensorRT.trtexec stand-in")


if __name__ == "__main__":
    main()
