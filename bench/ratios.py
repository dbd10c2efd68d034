#!/usr/bin/env python3
"""Run Google Benchmark binaries and print each BM_<Impl>_<Case> against BM_Raw_<Case> (or
the baseline named by --baseline) from the same run: ratio = baseline_time / time, so 1.0 means
as fast as the baseline and 0.5 means twice as slow."""
import json
import subprocess
import sys


def main(argv):
    if len(argv) < 2:
        print("usage: ratios.py BENCH_BINARY [benchmark args...]", file=sys.stderr)
        return 2
    out = subprocess.run(argv[1:] + ["--benchmark_format=json", "--benchmark_repetitions=5",
                                     "--benchmark_report_aggregates_only=true"],
                         check=True, capture_output=True, text=True).stdout
    results = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        _, impl, case = b["run_name"].split("_", 2)
        results.setdefault(case, {})[impl] = b["real_time"]
    for case, impls in sorted(results.items()):
        base = impls.get("Raw")
        for impl, t in sorted(impls.items()):
            if impl == "Raw" or base is None:
                continue
            print(f"{case:12s} {impl:8s} {t:9.2f} ns  baseline {base:9.2f} ns  ratio {base / t:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
