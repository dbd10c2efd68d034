#!/usr/bin/env python3
"""Snapshot and live-migration timings (docs/migration.md), each against a baseline measured in
the same run, run where /dev/kvm works (scripts/kvm-vm.sh python3 bench/migrate_bench.py B):

  save / restore vs guest RAM   an idle guest (xs_shutdown: waits on a xenstore watch) with
                                128 MiB .. 2 GiB: `save` (pause, write, fsync, resume) and
                                `restore` (process start until its control socket answers,
                                RAM loaded) against a fresh `run` to the same point; then the
                                same guest live-migrated (total and downtime)
  migration downtime            the IPI storm (4 vCPUs) migrated mid-run: downtime (pause ->
                                the destination says the guest runs) against a bare
                                pause + resume of the same guest just before (two control
                                requests, less two `status` requests' time)

usage: bench/migrate_bench.py BUILD_DIR [--sizes 128,512,1024,2048] [--rounds 3] [--dir /dev/shm]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

STORM_ROUNDS = 400  # the guest's default 25 ends before a script can migrate it


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
    """Spawns a VMM and returns it with the time until its control socket answered."""
    t0 = time.monotonic()
    vmm = Vmm(args)
    wait_for(lambda: answers(sock_path) or vmm.proc.poll() is not None, 120, "control socket")
    took = time.monotonic() - t0
    if vmm.proc.poll() is not None:
        raise RuntimeError("VMM ended early:\n" + vmm.output())
    return vmm, took


def ram_sizes(b, work, sizes, rounds):
    xenkvm = os.path.join(b, "cli", "xenkvm")
    guest = os.path.join(b, "guests", "xs_shutdown.elf")
    print("idle guest (xs_shutdown), medians of %d; baseline: the 128 MiB figure (save, "
          "migration) and a fresh `run` (restore)" % rounds)
    print(f"{'RAM MiB':>8} {'save ms':>9} {'x128':>6} {'file KiB':>9} {'restore ms':>11} "
          f"{'run ms':>8} {'ratio':>6} {'migr ms':>9} {'x128':>6} {'down ms':>8}")
    base = {}
    for mib in sizes:
        saves, restores, runs, migrations, downs, size = [], [], [], [], [], 0
        for r in range(rounds):
            sock, snap = f"{work}/c{mib}.{r}", f"{work}/s{mib}.{r}"
            common = ["--quiet", "--console", "none", "--console-io", "none", "--timeout", "300"]
            src, run_s = started([xenkvm, "run", "--memory", str(mib), "--control", sock] +
                                 common + [guest], sock)
            wait_for(lambda: request(sock, "status")["last_stage"] >= 10, 60, "guest stage 10")
            time.sleep(0.5)  # its xenstore watch set: idle
            t0 = time.monotonic()
            reply = request(sock, "save", file=snap)
            saves.append(time.monotonic() - t0)
            assert reply["ok"], reply
            size = os.path.getsize(snap)
            # The same guest live-migrated to a new process.
            inc = f"{work}/i{mib}.{r}"
            dest = Vmm([xenkvm, "restore", "--incoming", "unix:" + inc, "--control", sock + "d"] +
                       common)
            wait_for(lambda: os.path.exists(inc), 60, "incoming socket")
            reply = request(sock, "migrate", uri="unix:" + inc)
            assert reply["ok"], reply
            migrations.append(reply["total_ms"] / 1e3)
            downs.append(reply["downtime_ms"] / 1e3)
            src.stop()
            dest.stop()
            rest, restore_s = started([xenkvm, "restore", snap, "--control", sock + "r"] + common,
                                      sock + "r")
            rest.stop()
            os.unlink(snap)
            restores.append(restore_s)
            runs.append(run_s)
        med = {k: statistics.median(v) * 1e3 for k, v in
               dict(save=saves, restore=restores, run=runs, migr=migrations, down=downs).items()}
        base.setdefault("save", med["save"])
        base.setdefault("migr", med["migr"])
        print(f"{mib:8d} {med['save']:9.1f} {med['save'] / base['save']:6.2f} {size / 1024:9.0f} "
              f"{med['restore']:11.1f} {med['run']:8.1f} {med['restore'] / med['run']:6.2f} "
              f"{med['migr']:9.1f} {med['migr'] / base['migr']:6.2f} {med['down']:8.1f}")


def storm(b, work, rounds):
    xenkvm = os.path.join(b, "cli", "xenkvm")
    guest = os.path.join(b, "guests", "ipi_storm.elf")
    print("\nIPI storm (4 vCPUs, 128 MiB, %d rounds) migrated mid-run; baseline: pause + resume "
          "of the same guest just before" % STORM_ROUNDS)
    print(f"{'round':>6} {'pause+resume ms':>16} {'downtime ms':>12} {'ratio':>6} {'total ms':>9} "
          f"{'rounds':>7} {'final pages':>12}")
    bare, downs = [], []
    for r in range(rounds):
        sock, inc = f"{work}/storm{r}", f"{work}/stormin{r}"
        dest = Vmm([xenkvm, "restore", "--incoming", "unix:" + inc, "--quiet", "--timeout", "300"])
        wait_for(lambda: os.path.exists(inc), 60, "incoming socket")
        src = Vmm([xenkvm, "run", "--vcpus", "4", "--timeout", "300", "--control", sock,
                   "--cmdline", "rounds=%d" % STORM_ROUNDS, guest])
        wait_for(lambda: "stage 11\n" in src.output(), 60, "storm stage 11")
        # Two requests' worth of client and socket time, measured with `status`, is taken off.
        t0 = time.monotonic()
        assert request(sock, "status")["ok"] and request(sock, "status")["ok"]
        client = (time.monotonic() - t0) * 1e3
        t0 = time.monotonic()
        assert request(sock, "pause")["ok"]
        assert request(sock, "resume")["ok"]
        pause_resume = max((time.monotonic() - t0) * 1e3 - client, 0.1)
        reply = request(sock, "migrate", uri="unix:" + inc)
        ok = reply.get("ok") and dest.proc.wait(300) == 0 and "PASS ipi_storm" in dest.output()
        src.stop()
        dest.stop()
        if not ok or "PASS" in src.output():
            print(f"{r:6d} not a mid-run migration that passed: {reply}")
            continue
        bare.append(pause_resume)
        downs.append(reply["downtime_ms"])
        print(f"{r:6d} {pause_resume:16.1f} {reply['downtime_ms']:12.1f} "
              f"{reply['downtime_ms'] / pause_resume:6.2f} {reply['total_ms']:9.1f} "
              f"{reply['rounds']:7d} {reply['final_pages']:12d}")
    if downs:
        print(f"{'median':>6} {statistics.median(bare):16.1f} {statistics.median(downs):12.1f} "
              f"{statistics.median(downs) / statistics.median(bare):6.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--sizes", default="128,512,1024,2048")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="xenkvm-migbench-", dir=args.dir)
    try:
        ram_sizes(args.build_dir, work, [int(s) for s in args.sizes.split(",")], args.rounds)
        storm(args.build_dir, work, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
