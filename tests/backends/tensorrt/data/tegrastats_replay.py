"""STAND-IN for tegrastats, for the loopback SSH test only: replays recorded tegrastats lines from
a file, one every ``--interval`` ms, until killed (as tegrastats runs until killed)."""

import argparse
import itertools
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--interval", type=int, default=1000)
p.add_argument("recording")
args = p.parse_args()
with open(args.recording) as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]
for line in itertools.cycle(lines):
    print(line, flush=True)
    time.sleep(args.interval / 1e3)
sys.exit(0)
