"""Sinks under a storm, side by side: `pytrace tcpstates` plain, with --influx
and with --record, each traced through the same connection storm (the shared
harness's connstorm: N connections, K workers, 10 events each), in rounds that
alternate the three.  Per run: events lost in the kernel (the tool's stderr),
lines printed, events in the sink, points the sink dropped, seconds from
Ctrl-C to exit.  An influxd of its own runs on loopback (Debian's influxdb).

    sudo python3 bench/sinks_storm.py [--rounds 3] [--n 30000] [--k 2]

Run it on a quiet machine: the reader keeps up or not depending on the CPU
it gets, and other load moves the numbers more than the sinks do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED", os.path.join(HERE, "..", "..", "shared", "bench"))
PYTRACE = [sys.executable, "-m", "pytrace.cli"]
# the tests' InfluxDB server (tests/influxlab.py), here without authentication
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from influxlab import influx_server  # noqa: E402


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(pid: int, timeout: float = 15) -> None:
    """Until the tool's main thread sleeps in its loop (epoll)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/wchan") as fh:
                if fh.read() == "do_epoll_wait":
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit("the tracer did not reach its loop")


def one(mode: str, work: str, storm: str, n: int, k: int, influx: Any, run: int) -> dict:
    port = 47000 + run % 2000
    extra = {"plain": [], "influx": ["--influx", influx.url(f"storm{run}")],
             "record": ["--record", f"{work}/run{run}.db"]}[mode]
    out_path = f"{work}/out{run}.txt"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([*PYTRACE, "tcpstates", *extra], stdout=out, stderr=subprocess.PIPE, text=True)
    ready(proc.pid)
    subprocess.run([storm, "-n", str(n), "-k", str(k), "-p", str(port), "-q"], check=True, capture_output=True)
    time.sleep(0.5)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    exit_s = time.monotonic() - stopped
    with open(out_path) as fh:
        printed = sum(1 for line in fh if f" {port} " in line or f":{port} " in line)
    os.unlink(out_path)
    stored = None
    if mode == "influx":
        stored = influx.count(f"storm{run}")
    elif mode == "record":
        db = sqlite3.connect(f"{work}/run{run}.db")
        stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
        db.close()
    lost = sum(int(m.group(1)) for m in re.finditer(r"^lost (\d+) events", err, re.M))
    dropped = sum(int(m.group(1)) for m in re.finditer(r"(\d+) (?:points dropped|events not recorded)", err))
    return {"mode": mode, "lost": lost, "printed": printed, "stored": stored, "dropped": dropped,
            "exit_s": round(exit_s, 2), "rc": proc.returncode}


def cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{med:g} ({min(values):g}–{max(values):g})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=30000, help="connections per storm")
    p.add_argument("--k", type=int, default=2, help="storm workers")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("sinks_storm.py: needs root")
    work = tempfile.mkdtemp(prefix="pt-sinks-bench.")
    try:
        storm = os.path.join(work, "connstorm")
        subprocess.run(["gcc", "-O2", "-o", storm, os.path.join(SHARED, "connstorm.c")], check=True)
        with influx_server(Path(work) / "influxdb", auth=False) as influx:
            return run_rounds(args, work, storm, influx)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_rounds(args: argparse.Namespace, work: str, storm: str, influx: Any) -> int:
    results = []
    run = 0
    for _ in range(args.rounds):
        for mode in ("plain", "influx", "record"):
            run += 1
            r = one(mode, work, storm, args.n, args.k, influx, run)
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
    load = os.getloadavg()[0]
    print(f"tcpstates, {args.n} connections x {args.k} workers ({10 * args.n} events), "
          f"{args.rounds} rounds, load average {load:.1f} at the end\n")
    print("| sink | lost in the kernel | printed | in the sink | dropped by the sink | Ctrl-C to exit s |")
    print("|---|---|---|---|---|---|")
    for mode in ("plain", "influx", "record"):
        rs = [r for r in results if r["mode"] == mode]
        print(f"| {mode} | {cell([r['lost'] for r in rs])} | {cell([r['printed'] for r in rs])} | "
              f"{cell([r['stored'] for r in rs])} | {cell([r['dropped'] for r in rs])} | "
              f"{cell([r['exit_s'] for r in rs])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
