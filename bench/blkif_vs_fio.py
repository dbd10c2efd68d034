#!/usr/bin/env python3
"""The blkif backend (bench/blkif_bench, synthetic in-process frontend) beside fio with
--ioengine=io_uring on the same file at the same depth, alternating runs, medians, ratios.

usage: bench/blkif_vs_fio.py BUILD_DIR [--file PATH] [--size-mib N] [--seconds S] [--rounds R]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = [  # (bench mode, fio rw, block size, depth)
    ("rand4k", "randread", "4k", 32),
    ("seq1m", "read", "1m", 32),
]


def run_fio(path, rw, bs, depth, seconds):
    out = subprocess.run(
        ["fio", "--name=ref", f"--filename={path}", "--ioengine=io_uring", "--direct=1",
         f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}", f"--runtime={seconds}", "--time_based",
         "--readonly", "--output-format=json"],
        check=True, capture_output=True, text=True).stdout
    read = json.loads(out)["jobs"][0]["read"]
    return read["iops"], read["bw_bytes"] / 1e6


def run_backend(bench, path, mode, depth, seconds, persistent=False):
    args = [bench, path, mode, str(depth), str(seconds)] + (["persistent"] if persistent else [])
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    if out["dio_align"] == 0:
        print("note: backend fell back to buffered I/O on this file", file=sys.stderr)
    return out["iops"], out["mbps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--file", default=None)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench = os.path.join(args.build_dir, "bench", "blkif_bench")
    path = args.file or os.path.join(args.build_dir, "blkif_bench.img")
    if not os.path.exists(path) or os.path.getsize(path) < args.size_mib << 20:
        with open(path, "wb") as f:  # real data, not holes: holes read faster than disks
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))

    print(f"{'case':<8} {'backend IOPS':>13} {'fio IOPS':>10} {'backend MB/s':>13} {'fio MB/s':>9} "
          f"{'ratio':>6} {'persistent':>11}")
    for mode, rw, bs, depth in CASES:
        ours, theirs, pers = [], [], []
        for _ in range(args.rounds):  # alternate so drift hits both alike
            ours.append(run_backend(bench, path, mode, depth, args.seconds))
            theirs.append(run_fio(path, rw, bs, depth, args.seconds))
            pers.append(run_backend(bench, path, mode, depth, args.seconds, persistent=True))
        o_iops = statistics.median(x[0] for x in ours)
        t_iops = statistics.median(x[0] for x in theirs)
        p_iops = statistics.median(x[0] for x in pers)
        o_mbps = statistics.median(x[1] for x in ours)
        t_mbps = statistics.median(x[1] for x in theirs)
        print(f"{mode:<8} {o_iops:>13.0f} {t_iops:>10.0f} {o_mbps:>13.1f} {t_mbps:>9.1f} "
              f"{o_iops / t_iops:>5.2f}x {p_iops / o_iops:>10.2f}x")
    print("ratio = backend / fio (goal >= 0.8x); persistent = backend with grants mapped once / "
          "backend mapping per request")


if __name__ == "__main__":
    main()
