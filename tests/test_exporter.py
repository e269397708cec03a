"""`pytrace exporter`: /metrics after known traffic equals the exporter's own
in-kernel map (read back with bpftool), event counts equal the connections
made, a real Prometheus server (Debian's) scrapes it and answers queries,
and a config it cannot use exits 2 naming the line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import Cli, LoopbackPair, free_port, run_cli, tcp_roundtrip, wait_until

prometheus_client = pytest.importorskip("prometheus_client", reason="the exporter needs prometheus_client "
                                        "(scripts/setup.sh installs it)")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


class Exporter:
    def __init__(self, tmp_path: Path, config: str, bpf: bool = True):
        self.port = free_port()
        self.config = tmp_path / "exporter.toml"
        self.config.write_text(config)
        self.cli = Cli("exporter", "--config", str(self.config), "--listen", f"127.0.0.1:{self.port}", ready=bpf)
        assert wait_until(lambda: self._get() is not None, 10), "exporter not serving"

    def _get(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    def scrape(self) -> dict[str, list]:
        """metric family name -> samples"""
        text = self._get()
        assert text is not None
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def map_dump(self, name: str) -> list[dict]:
        """The exporter's own BPF map `name`, read by bpftool (found through its fds)."""
        pid = self.cli.proc.pid
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            map_id = next(int(l.split()[1]) for l in info.splitlines() if l.startswith("map_id:"))
            show = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(map_id)],
                                             capture_output=True, text=True, check=True).stdout)
            if show.get("name") == name:
                out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id)],
                                     capture_output=True, text=True, check=True).stdout
                return [e["formatted"] for e in json.loads(out)]
        raise AssertionError(f"exporter holds no map {name}")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        rc, _, err = self.cli.stop(sig)
        return rc, err


def histogram(samples: list, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], count, sum) of one labelled histogram."""
    mine = [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    buckets = sorted((float(s.labels["le"]), s.value) for s in mine if s.name.endswith("_bucket"))
    count = next(s.value for s in mine if s.name.endswith("_count"))
    total = next(s.value for s in mine if s.name.endswith("_sum"))
    return buckets, count, total


def settle(exp: Exporter) -> None:
    """Wait until the connection is quiet (the peer's delayed ACK can still
    arrive after the last exchange) so the map holds still while compared."""
    def still() -> bool:
        before = exp.map_dump("hists")
        time.sleep(0.3)
        return exp.map_dump("hists") == before
    assert wait_until(still, 10, 0)


def check_against_map(exp: Exporter, port_label: str) -> int:
    settle(exp)
    fams = exp.scrape()
    entries = exp.map_dump("hists")
    assert len(entries) == 1
    kernel = entries[0]["value"]
    buckets, count, total = histogram(fams["pytrace_tcp_rtt_seconds"], service=port_label)
    slots = kernel["slots"]
    # bucket le = 2^(i+1)-1 usecs for slot i; the last slot is open-ended (+Inf only)
    assert [le for le, _ in buckets[:-1]] == [((1 << (i + 1)) - 1) / 1e6 for i in range(len(slots) - 1)]
    assert buckets[-1][0] == float("inf")
    assert [c for _, c in buckets] == [sum(slots[:i + 1]) for i in range(len(slots))]
    assert count == kernel["cnt"] == sum(slots)
    assert total == pytest.approx(kernel["latency"] / 1e6, rel=1e-12, abs=1e-12)
    return int(count)


def test_histogram_counts_equal_the_in_kernel_map_at_scrape_time(tmp_path):
    pp = LoopbackPair(nodelay=True)
    exp = Exporter(tmp_path, f"""
[[metric]]
tool = "tcprtt"
labels = {{ service = "web" }}
options = {{ lport = {pp.port} }}
""")
    try:
        pp.exchange(200, 32)
        first = check_against_map(exp, "web")
        assert first >= 200
        pp.exchange(100, 32)      # no timer: the next scrape reads the map as it is now
        assert check_against_map(exp, "web") >= first + 100
    finally:
        rc, err = exp.stop()
        pp.close()
    assert rc == 0, err


def test_event_tool_counts_by_field(tmp_path):
    port = free_port()
    exp = Exporter(tmp_path, f"""
[[metric]]
tool = "tcpstates"
count_by = ["newstate"]
labels = {{ team = "net" }}
options = {{ lports = [{port}] }}
""")
    try:
        for _ in range(3):
            tcp_roundtrip("127.0.0.1", port)

        def counts() -> dict[str, float]:
            return {s.labels["newstate"]: s.value for s in exp.scrape()["pytrace_tcpstates_events"]
                    if s.name.endswith("_total")}
        assert wait_until(lambda: sum(counts().values()) >= 21, 10)
        got = counts()
        fams = exp.scrape()
    finally:
        rc, err = exp.stop()
    assert rc == 0, err
    assert got == {"LISTEN": 3, "SYN_RECV": 3, "ESTABLISHED": 3, "CLOSE_WAIT": 3, "LAST_ACK": 3, "CLOSE": 6}
    assert {s.labels["team"] for s in fams["pytrace_tcpstates_events"]} == {"net"}
    assert [s.value for s in fams["pytrace_tcpstates_events_lost"] if s.name.endswith("_total")] == [0]


def test_prometheus_server_scrapes_and_answers_queries(tmp_path):
    pp = LoopbackPair(nodelay=True)
    exp = Exporter(tmp_path, f"""
[exporter]
listen = "127.0.0.1:1"            # --listen wins over this

[[metric]]
tool = "tcprtt"
name = "pt_test_rtt_seconds"
labels = {{ service = "prom" }}
options = {{ lport = {pp.port} }}
""")
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: pytrace
    static_configs:
      - targets: ["127.0.0.1:{exp.port}"]
""")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    try:
        pp.exchange(150, 32)
        settle(exp)
        want = histogram(exp.scrape()["pt_test_rtt_seconds"], service="prom")[1]
        assert want >= 150

        def query() -> list:
            q = urllib.parse.urlencode({"query": 'pt_test_rtt_seconds_count{service="prom"}'})
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{q}", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                return []
            return body["data"]["result"] if body.get("status") == "success" else []
        assert wait_until(lambda: [float(r["value"][1]) for r in query()] == [want], 30), \
            (query(), (tmp_path / "prometheus.log").read_text()[-1500:])
        result = query()[0]["metric"]
        assert result["job"] == "pytrace" and result["service"] == "prom"
        q = urllib.parse.urlencode({"query": 'pt_test_rtt_seconds_bucket{service="prom",le="+Inf"}'})
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{q}", timeout=5) as r:
            assert float(json.loads(r.read())["data"]["result"][0]["value"][1]) == want
    finally:
        prom.terminate()
        prom.wait(15)
        exp.stop()
        pp.close()


BAD_CONFIGS = [
    ("[[metric]]\ntool = \"tcprtt\"\noptions = { lport = }\n", 3, "Invalid"),
    ("\n[[metric]]\ntool = \"nosuchtool\"\n", 3, "nosuchtool"),
    ("[[metric]]\ntool = \"tcprtt\"\n\n[[metric]]\ntool = \"tcprtt\"\nname = \"b\"\noptions = { rport = \"https\" }\n", 7,
     "rport"),
    ("[[metric]]\ntool = \"tcprtt\"\n[metric.options]\nlport = 80\nnosuch = 1\n", 5, "nosuch"),
    ("[[metric]]\ntool = \"tcprtt\"\ncolour = \"blue\"\n", 3, "colour"),
    ("[[metric]]\ntool = \"tcpstates\"\ncount_by = [\"newstate\", \"flavour\"]\n", 3, "flavour"),
    ("[[metric]]\ntool = \"tcprtt\"\nlabels = { \"bad-name\" = \"x\" }\n", 3, "bad-name"),
    ("[[metric]]\ntool = \"tcprtt\"\n[[metric]]\ntool = \"tcprtt\"\n", 3, "already exported"),
    ("[exporter]\nlisten = \"nowhere\"\n", 2, "HOST:PORT"),
    ("[exporter]\n", 1, "no [[metric]]"),
    ("[[metric]]\ntool = \"tcprtt\"\ncount_by = [\"x\"]\n", 3, "count_by"),
    ("[[metric]]\ntool = \"tcprtt\"\noptions = { by_raddr = true }\nlabels = { raddr = \"x\" }\n", 4, "raddr"),
    ("[[metric]]\ntool = \"tcplife\"\n\nobserve = \"comm\"\n", 4, "not a number"),
    ("[[metric]]\ntool = \"tcplife\"\nscale = 0.001\n", 3, "scale goes with observe"),
    ("[[metric]]\ntool = \"tcptop\"\ncount_by = [\"colour\"]\n", 3, "colour"),
    ("[[metric]]\ntool = \"tcptop\"\n\n[[metric]]\ntool = \"tcpstates\"\nhelp = 7\n", 6, "help"),
]


@pytest.mark.parametrize("text,line,needle", BAD_CONFIGS)
def test_malformed_config_exits_2_naming_the_line(tmp_path, text, line, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    r = run_cli("exporter", "--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"line {line}:" in r.stderr and needle in r.stderr, r.stderr


def test_bad_flags_and_busy_port(tmp_path):
    r = run_cli("exporter", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[[metric]]\ntool = "tcprtt"\n')
    r = run_cli("exporter", "--config", str(cfg), "--listen", "127.0.0.1:notaport")
    assert r.returncode == 2 and "--listen" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        r = run_cli("exporter", "--config", str(cfg), "--listen", f"127.0.0.1:{busy.getsockname()[1]}")
    assert r.returncode == 1 and "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr


def test_tcpsubnet_and_tcptop_bytes(tmp_path):
    """Bytes to an address only this test uses (127.0.0.77, still loopback) and
    per port of this process: exact, and tcptop's totals keep adding up across
    scrapes although the kernel table is emptied by each read."""
    port = free_port()
    exp = Exporter(tmp_path, f"""
[[metric]]
tool = "tcpsubnet"
options = {{ subnets = "127.0.0.77/32,0.0.0.0/0" }}

[[metric]]
tool = "tcptop"
count_by = ["lport"]
options = {{ pid = {os.getpid()} }}
""")
    try:
        conn = tcp_roundtrip("127.0.0.77", port, send=b"x" * 3000, reply=b"y" * 700)

        def by_port(fams, name) -> dict[str, float]:
            return {s.labels["lport"]: s.value for s in fams[name] if s.name.endswith("_total")}
        first = exp.scrape()
        tcp_roundtrip("127.0.0.77", port, send=b"x" * 1000, reply=b"y" * 100)
        second = exp.scrape()
    finally:
        rc, err = exp.stop()
    assert rc == 0, err
    subnet = {s.labels["subnet"]: s.value for s in second["pytrace_tcp_subnet_sent_bytes"]
              if s.name.endswith("_total")}
    assert subnet["127.0.0.77/32"] == 4000
    sent1, recv1 = by_port(first, "pytrace_tcp_sent_bytes"), by_port(first, "pytrace_tcp_received_bytes")
    assert (sent1[str(port)], recv1[str(port)]) == (700, 3000)                       # the server side
    assert (sent1[str(conn.client_port)], recv1[str(conn.client_port)]) == (3000, 700)
    sent2, recv2 = by_port(second, "pytrace_tcp_sent_bytes"), by_port(second, "pytrace_tcp_received_bytes")
    assert (sent2[str(port)], recv2[str(port)]) == (800, 4000)


def percpu_totals(dump: list[dict]) -> dict[int, int]:
    """softirqs' per-CPU stats map (bpftool's formatted dump) -> {vec: runs over all CPUs}."""
    return {e["key"]: sum(v["value"]["count"] for v in e["values"]) for e in dump}


def test_softirqs_counts_are_the_maps(tmp_path):
    """Soft IRQs never stop, so the scrape is bracketed by two reads of the
    exporter's own map: before <= scraped <= after, per vector."""
    exp = Exporter(tmp_path, """
[[metric]]
tool = "softirqs"
options = { dist = true }
""")
    try:
        tcp_roundtrip("127.0.0.1")            # some NET_RX at least
        before = percpu_totals(exp.map_dump("stats"))
        fams = exp.scrape()
        after = percpu_totals(exp.map_dump("stats"))
    finally:
        rc, err = exp.stop()
    assert rc == 0, err
    runs = {s.labels["softirq"]: s.value for s in fams["pytrace_softirq_runs"] if s.name.endswith("_total")}
    hist_counts = {s.labels["softirq"]: s.value for s in fams["pytrace_softirq_duration_seconds"]
                   if s.name.endswith("_count")}
    from pytrace.tools.softirqs import vec_names
    names = vec_names()
    assert runs and runs["net_rx"] >= 1
    for vec, n_after in after.items():
        if not n_after:
            continue
        name = names[vec]
        assert before.get(vec, 0) <= runs.get(name, 0) <= n_after
        assert hist_counts.get(name, 0) == runs.get(name, 0)


def test_tcplife_durations_as_a_histogram(tmp_path):
    """observe: each session's lifespan (ms) lands in the power-of-two bucket
    the same kernel events give to a library TcpLife beside the exporter."""
    from pytrace.tools.tcplife import TcpLife
    port = free_port()
    exp = Exporter(tmp_path, f"""
[[metric]]
tool = "tcplife"
name = "pt_session_seconds"
observe = "ms"
scale = 0.001
count_by = ["lport"]
options = {{ lports = [{port}] }}
""")
    try:
        with TcpLife(lports=[port]) as lib:
            for hold in (0.003, 0.012, 0.045):
                srv = socket.socket()
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind(("127.0.0.1", port))
                srv.listen(1)
                c = socket.create_connection(("127.0.0.1", port))
                a, _ = srv.accept()
                time.sleep(hold)
                c.close()
                a.recv(1)
                a.close()
                srv.close()
            events = list(lib.events(duration=0.5))
        assert len(events) == 3

        def hist():
            samples = exp.scrape().get("pt_session_seconds", [])
            return [s for s in samples if s.labels.get("lport") == str(port)]
        assert wait_until(lambda: any(s.name.endswith("_count") and s.value == 3 for s in hist()), 10)
        samples = hist()
    finally:
        rc, err = exp.stop()
    assert rc == 0, err
    ms = [e.ms for e in events]
    buckets = sorted((float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket"))
    for i, (le, count) in enumerate(buckets[:-1]):
        assert le == (1 << i) / 1000
        assert count == sum(1 for v in ms if v <= (1 << i)), (i, ms)
    assert buckets[-1] == (float("inf"), 3)
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    assert total == pytest.approx(sum(ms) / 1000, abs=1e-3)


CHILD_TRAFFIC = r"""
import socket, sys
refused = int(sys.argv[1])
for line in sys.stdin:
    n = int(line)
    for _ in range(n):
        with socket.socket() as s:
            s.connect_ex(("127.0.0.1", refused))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        for size in (100, 300):
            tx.sendto(b"s" * size, rx.getsockname())
            rx.recv(1000)
    print("done", flush=True)
"""


def test_chapter10_tools_served_from_their_spec(tmp_path):
    """Tables, histograms and a mixed tool are served from their SPEC (issue 20:
    no chapter-10 aggregating tool could be exported): the counters and
    histograms equal the calls a child process made, and grow across scrapes
    (never reset)."""
    import sys
    refused = free_port()
    child = subprocess.Popen([sys.executable, "-c", CHILD_TRAFFIC, str(refused)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    pid = child.pid
    exp = Exporter(tmp_path, f"""
[[metric]]
tool = "sofamily"
options = {{ pid = {pid} }}

[[metric]]
tool = "socksize"
options = {{ pid = {pid} }}
labels = {{ service = "t" }}

[[metric]]
tool = "count"
options = {{ tracepoints = ["syscalls:sys_exit_connect"], by = ["ret"], pid = {pid} }}

[[metric]]
tool = "sockrmem"
options = {{ pid = {pid} }}
""")

    def traffic(n: int) -> None:
        child.stdin.write(f"{n}\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"

    def totals(fams: dict, name: str) -> list:
        return [(s.labels, s.value) for s in fams[name] if s.name.endswith("_total")]

    try:
        traffic(3)
        fams = exp.scrape()
        fam = {(lb["kind"], lb["family"]): v for lb, v in totals(fams, "pytrace_sofamily_count")}
        assert fam == {("socket", "AF_INET"): 5, ("connect", "AF_INET"): 3}    # 3 refused, 2 UDP sockets
        assert [(lb["tracepoint"], lb["key_ret"], v) for lb, v in totals(fams, "pytrace_count_count")] == \
            [("syscalls:sys_exit_connect", "-111", 3)]
        for d in ("send", "recv"):
            _, count, total = histogram(fams["pytrace_socksize_bytes"], service="t", dir=d, pid=str(pid))
            assert (count, total) == (2, 400)
        _, count, _ = histogram(fams["pytrace_sockrmem_bytes"], name="rmem_limit")
        assert count == 2
        traffic(2)
        again = exp.scrape()
        assert [v for _, v in totals(again, "pytrace_count_count")] == [5]
        _, count, total = histogram(again["pytrace_socksize_bytes"], service="t", dir="send", pid=str(pid))
        assert (count, total) == (4, 800)
    finally:
        rc, err = exp.stop()
        child.stdin.close()
        child.wait(10)
    assert rc == 0, err


# the aggregating tools of the book's chapter 10 (tables, histograms, sockrmem's mix), and what a
# [[metric]] of each needs beyond the tool's name
CHAPTER10 = {"sockstat": "", "sofamily": "", "soprotocol": "", "soconnlat": "", "so1stbyte": "", "socketio": "",
             "socksize": "", "sockrmem": "", "tcpsynbl": "", "tcpnagle": "", "nettxlat": "", "netsize": "",
             "qdisclat": "", "skbdrop": "", "skblife": "", "nstat": "",
             "count": 'options = { tracepoints = ["syscalls:sys_enter_connect"] }'}


@pytest.mark.parametrize("tool", sorted(CHAPTER10))
def test_each_chapter10_aggregating_tool_is_served(tool, tmp_path):
    """Each one is accepted in a config, collected on every scrape without an
    error, and named in /metrics (issue 20: none could be exported)."""
    from pytrace import spec as specs
    from pytrace import tools as registry
    declared = registry.spec(tool)
    assert declared is not None and (declared.kind != specs.EVENTS or declared.mixed), tool
    from test_contract import queued_udp
    exp = Exporter(tmp_path, f'[[metric]]\ntool = "{tool}"\n{CHAPTER10[tool]}\n', bpf=declared.object is not None)
    try:
        for _ in range(2):
            tcp_roundtrip("127.0.0.1")
            if tool == "qdisclat":
                queued_udp()        # packets that wait in a qdisc
            with urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/metrics", timeout=5) as r:
                assert r.status == 200
                text = r.read().decode()
            names = {f.name for f in text_string_to_metric_families(text)}
            assert any(n == f"pytrace_{tool}" or n.startswith(f"pytrace_{tool}_") for n in names), sorted(names)
    finally:
        rc, err = exp.stop()
    assert rc == 0, err
