#!/usr/bin/env python3
"""Exporter memory under sustained scraping: does RSS stay flat?

Starts `pytrace exporter` with a config that exercises every kind of
collector (tcprtt histograms per remote address and softirqs histograms read
from the kernel at each scrape, tcpstates events counted by state), keeps a
little loopback traffic going so the maps change, scrapes /metrics at a fixed
rate (default 50/s, one keep-alive connection as Prometheus does) for a fixed
time (default 60 s), and samples the exporter's resident memory every 5 s.

    sudo python3 bench/exporter_memory.py              # print the table
    sudo python3 bench/exporter_memory.py --readme     # also write its section of bench/README.md

Run as root on a quiet machine (it loads BPF programs).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTION = "## exporter: memory under sustained scraping (bench/exporter_memory.py)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    get = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1))  # noqa: E731
    return get("VmRSS"), get("VmHWM")


def traffic(port: int, stop: threading.Event) -> None:
    """A few hundred small request/responses per second, plus a new connection every 0.2 s."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    last = 0.0
    while not stop.is_set():
        for _ in range(20):
            c.sendall(b"q" * 64)
            a.recv(64)
            a.sendall(b"a" * 64)
            c.recv(64)
        if time.monotonic() - last > 0.2:
            last = time.monotonic()
            x = socket.create_connection(("127.0.0.1", port))
            y, _ = srv.accept()
            x.close()
            y.close()
        stop.wait(0.05)
    for s in (c, a, srv):
        s.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50, help="scrapes per second (default 50)")
    p.add_argument("--duration", type=float, default=60, help="seconds of scraping (default 60)")
    p.add_argument("--sample", type=float, default=5, help="seconds between memory samples (default 5)")
    p.add_argument("--readme", action="store_true", help="write the result into bench/README.md")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("exporter_memory.py: run as root (the exporter loads BPF programs)")

    tport, xport = free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(f"""
[[metric]]
tool = "tcprtt"
options = {{ lport = {tport}, by_raddr = true }}

[[metric]]
tool = "softirqs"
options = {{ dist = true }}

[[metric]]
tool = "tcpstates"
count_by = ["newstate"]
options = {{ lports = [{tport}] }}
""")
    cfg.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    exp = subprocess.Popen([sys.executable, "-m", "pytrace.cli", "exporter", "--config", cfg.name,
                            "--listen", f"127.0.0.1:{xport}"], env=env, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    t = threading.Thread(target=traffic, args=(tport, stop), daemon=True)
    try:
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", xport, timeout=5)
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                break
            except OSError:
                conn = None
                time.sleep(0.05)
                if exp.poll() is not None:
                    sys.exit(f"exporter exited: {exp.stderr.read()}")
        if conn is None:
            sys.exit("exporter did not start serving")
        t.start()
        samples, latencies, errors, sizes = [], [], 0, []
        start = time.monotonic()
        samples.append((0.0, *rss_kib(exp.pid)))
        next_sample = start + args.sample
        n = 0
        while True:
            due = start + n / args.rate
            now = time.monotonic()
            if due - start >= args.duration:
                break
            if due > now:
                time.sleep(due - now)
            t0 = time.monotonic()
            try:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    errors += 1
                sizes.append(len(body))
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", xport, timeout=5)
            latencies.append(time.monotonic() - t0)
            n += 1
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - start, *rss_kib(exp.pid)))
                next_sample += args.sample
        elapsed = time.monotonic() - start
        samples.append((elapsed, *rss_kib(exp.pid)))
    finally:
        stop.set()
        exp.send_signal(signal.SIGTERM)
        try:
            exp.wait(15)
        except subprocess.TimeoutExpired:
            exp.kill()
        os.unlink(cfg.name)

    lat = sorted(latencies)
    p50, p99 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3
    warm = next((s for s in samples if s[0] >= 10), samples[0])
    end = samples[-1]
    lines = [f"{n} scrapes in {elapsed:.1f} s ({n / elapsed:.1f}/s), {errors} errors, "
             f"response {statistics.mean(sizes) / 1024:.1f} KiB, latency p50 {p50:.1f} ms, p99 {p99:.1f} ms",
             "",
             "| t (s) | RSS (MiB) | peak RSS (MiB) |",
             "|---:|---:|---:|"]
    lines += [f"| {t_:.0f} | {r / 1024:.1f} | {h / 1024:.1f} |" for t_, r, h in samples]
    lines += ["", f"RSS from t={warm[0]:.0f} s to the end: {warm[1] / 1024:.1f} -> {end[1] / 1024:.1f} MiB "
                  f"({(end[1] - warm[1]) / 1024:+.2f} MiB)"]
    report = "\n".join(lines)
    print(report)
    if args.readme:
        write_readme(report, args)
    return 0


def write_readme(report: str, args: argparse.Namespace) -> None:
    import textwrap
    path = HERE / "README.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    uname = os.uname()
    wrap = lambda t: textwrap.fill(t, 90)  # noqa: E731
    body = (f"{SECTION}\n\n"
            + wrap("What it measures: the resident memory of `pytrace exporter` while /metrics is scraped "
                   f"{args.rate:g} times a second for {args.duration:g} s over one keep-alive connection. "
                   "The config exercises every collector kind: tcprtt histograms per remote address and "
                   "softirqs histograms (maps read at each scrape), and tcpstates events counted by state "
                   "(a reader thread); a loopback ping-pong with a new connection every 0.2 s keeps the "
                   "maps changing.  Memory is VmRSS of the exporter process, sampled every "
                   f"{args.sample:g} s.") + "\n\n"
            + wrap(f"Run: `sudo python3 bench/exporter_memory.py --readme` ({time.strftime('%Y-%m-%d')}, "
                   f"kernel {uname.release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
                   f"load average {os.getloadavg()[0]:.1f} at the start).") + f"\n\n{report}\n")
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        text = head + body + ("\n" + rest[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
