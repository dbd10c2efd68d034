#!/usr/bin/env python3
"""Snapshot and live-migration timings (docs/migration.md), each against a baseline measured in
the same run, run where /dev/kvm works (scripts/kvm-vm.sh python3 bench/migrate_bench.py B):

  save / restore vs guest RAM   an idle guest (xs_shutdown: waits on a xenstore watch) with
                                128 MiB .. 2 GiB: `save` (pause, write, fsync, resume: the
                                reply's took_ms), `restore` (reading the file into the new
                                machine: its log line), and the same guest live-migrated
                                (total and downtime), each against its 128 MiB figure
  migration downtime            the IPI storm (4 vCPUs) migrated mid-run: downtime (pause ->
                                the destination says the guest runs) against a bare pause +
                                resume of the same guest just before (the replies' took_ms)

usage: bench/migrate_bench.py BUILD_DIR [--sizes 128,512,1024,2048] [--rounds 3] [--dir /dev/shm]
                              [--only ram|storm]
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

STORM_ROUNDS = 60  # the guest's default 25 ends before a script can migrate it


def request(sock_path, command, **fields):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall((json.dumps(dict(command=command, **fields)) + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return json.loads(data)


def wait_for(predicate, limit, what):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for " + what)


def answers(sock_path):
    try:
        return request(sock_path, "status").get("ok", False)
    except OSError:
        return False


class Vmm:
    def __init__(self, args):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def started(args, sock_path):
    """Spawns a VMM and waits until its control socket answers."""
    vmm = Vmm(args)
    wait_for(lambda: answers(sock_path) or vmm.proc.poll() is not None, 120, "control socket")
    if vmm.proc.poll() is not None:
        raise RuntimeError("VMM ended early:\n" + vmm.output())
    return vmm


def restored_ms(output):
    m = re.search(r"xenkvm: restored \S+ in ([0-9.]+) ms", output)
    if not m:
        raise RuntimeError("no restore time in:\n" + output)
    return float(m.group(1))


def ram_sizes(b, work, sizes, rounds):
    xenkvm = os.path.join(b, "cli", "xenkvm")
    guest = os.path.join(b, "guests", "xs_shutdown.elf")
    print("idle guest (xs_shutdown), medians of %d; times as the VMM measures them (save: the "
          "reply's took_ms; restore: its log line; migration: the reply); x128: against the "
          "128 MiB figure" % rounds)
    print(f"{'RAM MiB':>8} {'save ms':>9} {'x128':>6} {'file KiB':>9} {'restore ms':>11} "
          f"{'x128':>6} {'migr ms':>9} {'x128':>6} {'down ms':>8} {'x128':>6}")
    base = {}
    for mib in sizes:
        got = {k: [] for k in ("save", "restore", "migr", "down")}
        size = 0
        for r in range(rounds):
            sock, snap = f"{work}/c{mib}.{r}", f"{work}/s{mib}.{r}"
            common = ["--quiet", "--console", "none", "--console-io", "none", "--timeout", "300"]
            src = started([xenkvm, "run", "--memory", str(mib), "--control", sock] + common +
                          [guest], sock)
            wait_for(lambda: request(sock, "status")["last_stage"] >= 10, 60, "guest stage 10")
            time.sleep(0.5)  # its xenstore watch set: idle
            reply = request(sock, "save", file=snap)
            assert reply["ok"], reply
            got["save"].append(reply["took_ms"])
            size = os.path.getsize(snap)
            # The same guest live-migrated to a new process.
            inc = f"{work}/i{mib}.{r}"
            dest = Vmm([xenkvm, "restore", "--incoming", "unix:" + inc, "--control", sock + "d"] +
                       common)
            wait_for(lambda: os.path.exists(inc), 60, "incoming socket")
            reply = request(sock, "migrate", uri="unix:" + inc)
            assert reply["ok"], reply
            got["migr"].append(reply["total_ms"])
            got["down"].append(reply["downtime_ms"])
            src.stop()
            dest.stop()
            rest = started([xenkvm, "restore", snap, "--control", sock + "r"] + common, sock + "r")
            rest.stop()
            got["restore"].append(restored_ms(rest.output()))
            os.unlink(snap)
        med = {k: statistics.median(v) for k, v in got.items()}
        for k in med:
            base.setdefault(k, med[k])
        print(f"{mib:8d} {med['save']:9.1f} {med['save'] / base['save']:6.2f} {size / 1024:9.0f} "
              f"{med['restore']:11.1f} {med['restore'] / base['restore']:6.2f} "
              f"{med['migr']:9.1f} {med['migr'] / base['migr']:6.2f} "
              f"{med['down']:8.1f} {med['down'] / base['down']:6.2f}")


def storm(b, work, rounds):
    xenkvm = os.path.join(b, "cli", "xenkvm")
    guest = os.path.join(b, "guests", "ipi_storm.elf")
    print("\nIPI storm (4 vCPUs, 128 MiB, %d rounds) migrated mid-run; baseline: a bare pause + "
          "resume of the same guest just before (the replies' took_ms)" % STORM_ROUNDS)
    print(f"{'run':>6} {'pause+resume ms':>16} {'downtime ms':>12} {'ratio':>7} {'total ms':>9} "
          f"{'rounds':>7} {'final pages':>12}")
    bare, downs = [], []
    for r in range(rounds):
        sock, inc = f"{work}/storm{r}", f"{work}/stormin{r}"
        dest = Vmm([xenkvm, "restore", "--incoming", "unix:" + inc, "--quiet", "--timeout", "300"])
        wait_for(lambda: os.path.exists(inc), 60, "incoming socket")
        src = Vmm([xenkvm, "run", "--vcpus", "4", "--timeout", "300", "--control", sock,
                   "--cmdline", "rounds=%d" % STORM_ROUNDS, guest])
        wait_for(lambda: "stage 11\n" in src.output(), 60, "storm stage 11")
        paused, resumed = request(sock, "pause"), request(sock, "resume")
        assert paused["ok"] and resumed["ok"], (paused, resumed)
        pause_resume = paused["took_ms"] + resumed["took_ms"]
        reply = request(sock, "migrate", uri="unix:" + inc)
        ok = reply.get("ok") and dest.proc.wait(300) == 0 and "PASS ipi_storm" in dest.output()
        src.stop()
        dest.stop()
        if not ok or "PASS" in src.output():
            print(f"{r:6d} not a mid-run migration that passed: {reply}")
            print("  source: " + "\n  source: ".join(src.output().splitlines()[-4:]))
            print("  destination: " + "\n  destination: ".join(dest.output().splitlines()[-6:]))
            continue
        bare.append(pause_resume)
        downs.append(reply["downtime_ms"])
        print(f"{r:6d} {pause_resume:16.1f} {reply['downtime_ms']:12.1f} "
              f"{reply['downtime_ms'] / pause_resume:7.1f} {reply['total_ms']:9.1f} "
              f"{reply['rounds']:7d} {reply['final_pages']:12d}")
    if downs:
        print(f"{'median':>6} {statistics.median(bare):16.1f} {statistics.median(downs):12.1f} "
              f"{statistics.median(downs) / statistics.median(bare):7.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--sizes", default="128,512,1024,2048")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--only", choices=["ram", "storm"], default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="xenkvm-migbench-", dir=args.dir)
    try:
        if args.only != "storm":
            ram_sizes(args.build_dir, work, [int(s) for s in args.sizes.split(",")], args.rounds)
        if args.only != "ram":
            storm(args.build_dir, work, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
