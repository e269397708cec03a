#!/usr/bin/env python3
"""What tracing every hop costs: a bounded bulk TCP transfer across the vnet demo
topology (container -> veth -> bridge -> VXLAN -> underlay veth -> ... ->
container), without tracing, with `pytrace vnet record` tracing all 16 hops
for every packet, and with 1-in-N flow sampling.

    sudo python3 bench/vnet_overhead.py                 # print the table
    sudo python3 bench/vnet_overhead.py --readme        # ... and put it in bench/README.md

Each round runs every mode once, in rotating order, on a fresh transfer of
--mb MiB split over --flows parallel TCP connections (so that 1-in-N sampling
has flows to choose from); the overhead ratio is taken within a round, then
the median over --runs rounds is reported.  The recorder is the real command
(`pytrace vnet record -q`, records stored to SQLite in a temporary file), so
the cost includes the in-kernel hashing, the ring buffer and the Python
consumer.  Records and losses are those the recorder reports.

This is a benchmark, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "src" / "pytrace").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

from pytrace.core.netattach import in_netns          # noqa: E402
from pytrace.vnet.demo import ADDR, Topology         # noqa: E402

PORT = 5201
CHUNK = 256 * 1024
HEADING = "## vnet: tracing overhead on the demo topology (bench/vnet_overhead.py)"


def transfer(topo: Topology, total: int, flows: int, timeout: float = 120.0) -> float:
    """Send `total` bytes cA -> cB over `flows` TCP connections; seconds taken."""
    with in_netns(topo.ns["cB"]):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ADDR["cB"], PORT))
    srv.listen(flows)
    srv.settimeout(timeout)
    per = total // flows
    got = [0] * flows
    errors: list[BaseException] = []

    def sink(i: int, conn: socket.socket) -> None:
        buf = bytearray(CHUNK)
        try:
            conn.settimeout(timeout)
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                got[i] += n
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    def source() -> None:
        with in_netns(topo.ns["cA"]):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            c.settimeout(timeout)
            c.connect((ADDR["cB"], PORT))
            data = bytes(CHUNK)
            left = per
            while left > 0:
                n = min(left, CHUNK)
                c.sendall(data[:n])
                left -= n
        except BaseException as exc:
            errors.append(exc)
        finally:
            c.close()

    start = time.monotonic()
    senders = [threading.Thread(target=source) for _ in range(flows)]
    for t in senders:
        t.start()
    sinks = []
    try:
        for i in range(flows):
            conn, _ = srv.accept()
            t = threading.Thread(target=sink, args=(i, conn))
            t.start()
            sinks.append(t)
    finally:
        srv.close()
    for t in senders + sinks:
        t.join(timeout)
    took = time.monotonic() - start
    if errors or sum(got) != per * flows:
        raise RuntimeError(f"transfer failed: {sum(got)} of {per * flows} bytes; {errors[:1]}")
    return took


def config(topo: Topology, path: Path, sample: int) -> None:
    lines = ['host = "bench"', "[select]", 'protocol = "tcp"', 'net = ["198.51.100.0/24"]', f"sample = {sample}"]
    for p in topo.points():
        lines += ["[[point]]", f'label = "{p.label}"', f'device = "{p.device}"', f'netns = "{p.netns}"',
                  f'direction = "{p.direction}"', f'method = "{p.method}"']
    path.write_text("\n".join(lines) + "\n")


class Recorder:
    def __init__(self, cfg: Path, tmp: Path, ring_mb: int):
        self.sock = tmp / "ctl.sock"
        env = dict(os.environ)
        if (ROOT / "src" / "pytrace").is_dir():
            env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "pytrace.cli", "vnet", "record", "-q", "-c", str(cfg),
                                      "-o", str(tmp / "bench.db"), "--ctl", str(self.sock),
                                      "--ring-mb", str(ring_mb)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        end = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"recorder did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)

    def stop(self) -> tuple[int, int]:
        """(records stored, records lost) as the recorder reports them."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=120)
        m = re.search(r"(\d+) records stored.*?(?:; (\d+) lost)?$", err, re.M)
        if self.proc.returncode != 0 or not m:
            raise RuntimeError(f"recorder failed: {err}")
        return int(m.group(1)), int(m.group(2) or 0)


def run(args: argparse.Namespace) -> list[tuple[str, list[float], list[float], list[int], list[int]]]:
    modes = ["base", "all"] + [f"sample-{n}" for n in args.sample]
    results = {m: {"gbps": [], "ratio": [], "records": [], "lost": []} for m in modes}
    total = args.mb << 20
    with Topology(f"bench{os.getpid()}") as topo, tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        transfer(topo, min(total, 32 << 20), args.flows)       # warm up (neighbour, bridge learning)
        for rnd in range(args.runs):
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
            speeds: dict[str, float] = {}
            for mode in order:
                rec = None
                if mode != "base":
                    sample = 1 if mode == "all" else int(mode.split("-")[1])
                    config(topo, tmp / "vnet.toml", sample)
                    (tmp / "bench.db").unlink(missing_ok=True)
                    rec = Recorder(tmp / "vnet.toml", tmp, args.ring_mb)
                try:
                    took = transfer(topo, total, args.flows)
                finally:
                    stored, lost = rec.stop() if rec else (0, 0)
                speeds[mode] = total * 8 / took / 1e9
                results[mode]["gbps"].append(speeds[mode])
                results[mode]["records"].append(stored)
                results[mode]["lost"].append(lost)
                print(f"round {rnd + 1} {mode:<10} {speeds[mode]:7.2f} Gbit/s  records {stored}  lost {lost}",
                      file=sys.stderr, flush=True)
            for mode in modes:
                results[mode]["ratio"].append(speeds[mode] / speeds["base"])
    return [(m, r["gbps"], r["ratio"], r["records"], r["lost"]) for m, r in results.items()]


def table(rows, args: argparse.Namespace) -> str:
    def mm(v: list[float], fmt: str) -> str:
        return f"{statistics.median(v):{fmt}} ({min(v):{fmt}}–{max(v):{fmt}})"
    out = [f"Transfer: {args.mb} MiB over {args.flows} TCP flows, cA -> cB across the VXLAN overlay; "
           f"{args.runs} rounds; median (min–max). Tracing = `pytrace vnet record -q` on all 16 hops, "
           f"SQLite store, ring {args.ring_mb} MiB.",
           "",
           "| mode | Gbit/s | throughput / no tracing | records per run | lost per run |",
           "|---|---|---|---|---|"]
    for mode, gbps, ratio, recs, lost in rows:
        name = {"base": "no tracing", "all": "every packet"}.get(mode) or f"1 in {mode.split('-')[1]} flows"
        out.append(f"| {name} | {mm(gbps, '.2f')} | {mm(ratio, '.3f')} | "
                   f"{statistics.median(recs):.0f} | {statistics.median(lost):.0f} |")
    return "\n".join(out) + "\n"


DESCRIPTION = """\
What it measures: the throughput of a bounded bulk TCP transfer (default 512 MiB over 8
parallel connections) from container cA to container cB of the `pytrace vnet demo`
topology (veth, bridge, VXLAN over an underlay veth link, two "hosts"), in three modes
run in rotating order each round: no tracing; `pytrace vnet record -q` tracing all 16
hops (tc, XDP and device tracepoints) for every packet, stored to SQLite; the same with
1-in-4 flow sampling (`sample = 4`, decided in the kernel).  The overhead ratio is
taken within each round (traced / untraced throughput); the table gives the median
over the rounds, with the records the recorder stored and any it lost.

Run it on a quiet machine, as root: `sudo python3 bench/vnet_overhead.py --readme`
(it replaces this section's results and leaves the rest of this file alone).
"""


def section(results: str) -> str:
    return f"{HEADING}\n\n{DESCRIPTION}\n{results}"


def update_readme(text: str) -> Path:
    """Put the table under our own heading in bench/README.md, leaving the rest alone."""
    path = ROOT / "bench" / "README.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    results = (f"Results: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, kernel {os.uname().release}.\n\n"
               f"{text}")
    if HEADING in old:
        head, rest = old.split(HEADING, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = head + section(results) + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section(results)
    path.write_text(new)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=512, help="MiB per transfer (default 512)")
    p.add_argument("--flows", type=int, default=8, help="parallel TCP connections (default 8)")
    p.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--sample", type=int, action="append", help="1-in-N sampling modes (default: 4)")
    p.add_argument("--ring-mb", type=int, default=64, help="recorder ring buffer (default 64)")
    p.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    args = p.parse_args()
    args.sample = args.sample or [4]
    if os.geteuid() != 0:
        sys.exit("vnet_overhead: run as root (namespaces, BPF)")
    if not 1 <= args.mb <= 16384 or not 1 <= args.flows <= 64 or not 1 <= args.runs <= 50:
        sys.exit("vnet_overhead: --mb 1..16384, --flows 1..64, --runs 1..50")
    text = table(run(args), args)
    sys.stdout.write(text)
    if args.readme:
        print(f"written to {update_readme(text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
