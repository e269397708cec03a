"""The stop matrix's other half (test_stop_matrix has every registry tool):
the commands that are not registry tools, or that run otherwise than a
tool's loop, stopped the ways that make sense for each.  They must end as
documented (README: a tool, and the exporter, with status 0 on SIGINT,
SIGTERM and SIGHUP; replay, not a tool, with 130 on Ctrl-C and by the
signal on SIGTERM and SIGHUP), say nothing on stderr but what they say by
design, and leave nothing behind: no BPF object they held (IDs from their
fdinfo, as the matrix reads them), no tracefs mount or probe event
(kernelstate.left_since), no network namespace, no tc filter.

  exporter           tcprtt (read at scrape time) and tcpstates (its events
                     pumped); ready: asleep in its loop, holding its programs;
                     a loopback connection, and /metrics scraped all along
  replay FILE        a recording of 3000 UDP connects written to a pipe no
                     one reads: ready (and still writing) once it blocks
                     there; what it printed must be the start of the whole
                     replay, byte for byte
  vnet demo          1,000,000 echoes through a 100 kbit/s tbf: ready once
                     its 4 namespaces exist, it holds its 16 programs and
                     waits for an echo
  tunnelmon simulate 2 hosts of 1 client, pinging for 120 s: ready once its
                     5 namespaces exist and it waits to send (epoll)
  simulate --web     the same, monitoring h0 (tc) and serving the web view,
                     its /api/stats polled all along
  tunnelmon --web    on a veth of the test's namespace (tc), the web view
                     polled all along

Stops: SIGINT, SIGTERM and SIGHUP each; two stops 0-40 ms apart (one pair
and one gap a command, in turn; replay's pair is two Ctrl-Cs, test_stops
has a burst of them); SIGKILL for the commands that hold something, then
the next run (which removes what the dead one left, and says so, then
stops with status 0) or `pytrace doctor --cleanup`, in turn: test_leftovers
has both for the namespace builders and tunnelmon.  replay holds nothing
and is not SIGKILLed.

Bounded: 32 runs of 0.1-1 s (5 namespaces build in ~0.2 s here, the demo
starts in ~0.5 s), ~17 s in all with the recording (~1 s).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading

import pytest

from helpers import free_port, run_cli, sh, wait_until
from ready import udp_connects_recorded
from tcfilters import has_clsact, ours
from test_leftovers import removal_lines
from test_stop_matrix import LOOP_WAITS, Run, traffic, veth_namespace, wchan

PID = os.getpid()
NETNS = f"pt-stopcmd-{PID}"
INT, TERM, HUP = signal.SIGINT, signal.SIGTERM, signal.SIGHUP
CONNECTS = 3000         # replay: ~170 KB of text, more than a pipe holds


class Ctx:
    """What the commands run with: the exporter's config, a long recording
    and its whole replay, a veth in a namespace of the test's."""

    def __init__(self, tmp: str):
        self.runs = 0
        self.exporter_config = os.path.join(tmp, "exporter.toml")
        with open(self.exporter_config, "w") as fh:
            fh.write('[[metric]]\ntool = "tcprtt"\n\n[[metric]]\ntool = "tcpstates"\ncount_by = ["newstate"]\n')
        self.recording = os.path.join(tmp, "udp.db")
        udp_connects_recorded(self.recording, CONNECTS)
        whole = run_cli("replay", self.recording)
        assert (whole.returncode, whole.stderr, whole.stdout.count("\n")) == (0, "", CONNECTS + 1)
        self.replayed = whole.stdout


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    with veth_namespace(NETNS):
        yield Ctx(str(tmp_path_factory.mktemp("stopcmd")))


class Poller(threading.Thread):
    """GET url over one keep-alive connection (a browser tab, a Prometheus),
    every 5 ms until stopped; the statuses it got."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.statuses: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.done.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                self.statuses.append(resp.status)
            except (OSError, http.client.HTTPException):      # going, or gone
                if conn is not None:
                    conn.close()
                conn = None
            self.done.wait(0.005)

    def answered(self) -> bool:
        """Once it has had one answer (or waited 10 s): True if it was a 200."""
        wait_until(lambda: bool(self.statuses), 10, 0.01)
        return self.statuses[:1] == [200]

    def stop(self) -> None:
        self.done.set()
        self.join(5)


class Cmd(Run):
    """One run of a command.  A subclass says how it is started, when it is
    ready, how it ends, what it prints and what of it outlives a SIGKILL."""

    name = ""
    waits: tuple[str, ...] = tuple(LOOP_WAITS)     # where its main thread sleeps once ready (wchan prefixes)
    progs = 1                   # BPF programs it holds once ready, at least
    statuses = {INT: 0, TERM: 0, HUP: 0}
    after_kill: str | None = None       # "next" or "doctor": what removes a SIGKILLed run's leftovers
    swept_prefix = ""           # how the next run prefixes what it says it removed
    web_path: str | None = None

    def __init__(self, ctx: Ctx, like: "Cmd | None" = None):
        ctx.runs += 1
        self.ctx, self.n = ctx, ctx.runs
        self.port = like.port if like is not None else free_port()     # the next run takes the dead one's
        self.poller: Poller | None = None
        super().__init__(self.name, None, argv=self.argv())

    def argv(self) -> list[str]:
        raise NotImplementedError

    def sleeping(self) -> bool:
        return wchan(self.proc.pid).startswith(self.waits) and self.built()

    def built(self) -> bool:
        return True

    def holds_all(self) -> bool:
        return len(self.held["prog"]) >= self.progs

    def exercise(self) -> None:
        """What it is there for, going on while it is stopped."""
        if self.web_path is not None:
            self.poller = Poller(self.port, self.web_path)
            self.poller.start()
            assert self.poller.answered(), self.poller.statuses

    def stop(self, sig: int | None, timeout: float = 15) -> tuple[int, str, str]:
        try:
            return super().stop(sig, timeout)
        finally:
            if self.poller is not None:
                self.poller.stop()

    def check(self, sig: int, out: str, err: str, swept: list[str] = ()) -> None:
        """What it printed, exactly; swept: what a next run says it removed."""
        lines = err.splitlines()
        said = [line for line in lines if line.startswith(f"{self.swept_prefix}removed ")]
        assert set(swept) <= set(said), err
        assert [line for line in lines if line not in said] == self.stderr(), err

    def stderr(self) -> list[str]:
        return []

    def remains(self) -> dict[str, list]:
        """What of it is on the host that the kernel does not free with the process."""
        return {}

    def swept(self, remains: dict[str, list]) -> list[str]:
        """What the next run or the cleanup says when it removes a dead run's remains."""
        return []

    def left(self, timeout: float = 10) -> dict:
        # a namespace's programs are freed when the kernel has torn it down (asynchronously)
        left = super().left(timeout)
        left.update({k: v for k, v in self.remains().items() if v})
        return left


class Exporter(Cmd):
    name = "exporter"
    waits = ("hrtimer_nanosleep",)      # time.sleep(3600): serving
    after_kill = "next"
    web_path = "/metrics"

    def argv(self) -> list[str]:
        return ["exporter", "--config", self.ctx.exporter_config, "--listen", f"127.0.0.1:{self.port}"]

    def exercise(self) -> None:
        traffic()
        super().exercise()

    def check(self, sig: int, out: str, err: str, swept: list[str] = ()) -> None:
        assert out == ""
        super().check(sig, out, err, swept)

    def stderr(self) -> list[str]:
        return [f"pytrace exporter: serving http://127.0.0.1:{self.port}/metrics (tcprtt, tcpstates)"]


class Replay(Cmd):
    name = "replay"
    waits = ()
    progs = 0
    statuses = {INT: 130, TERM: -TERM, HUP: -HUP}

    def argv(self) -> list[str]:
        return ["replay", self.ctx.recording]

    def sleeping(self) -> bool:
        return wchan(self.proc.pid).endswith("pipe_write")     # (anon_pipe_write on 6.x)

    def check(self, sig: int, out: str, err: str, swept: list[str] = ()) -> None:
        assert 0 < len(out) < len(self.ctx.replayed), len(out)
        assert self.ctx.replayed.startswith(out)
        super().check(sig, out, err, swept)


def netns_named(prefix: str = "", suffix: str = "") -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix) and n.endswith(suffix))


class Demo(Cmd):
    name = "vnet-demo"
    waits = ("poll_schedule_timeout",)     # an echo's recvfrom (a timeout: poll)
    progs = 16                  # a point each, all attached
    after_kill = "next"
    swept_prefix = "vnet: "

    def argv(self) -> list[str]:
        return ["vnet", "demo", "-n", "1000000", "--tbf", "hA:ul0", "--tbf-rate", "100kbit"]

    def namespaces(self) -> list[str]:
        return [f"pt-vnet-{role}-{self.proc.pid}" for role in ("hA", "hB", "cA", "cB")]

    def built(self) -> bool:
        return netns_named("pt-vnet-", f"-{self.proc.pid}") == sorted(self.namespaces())

    def check(self, sig: int, out: str, err: str, swept: list[str] = ()) -> None:
        assert out == ""            # stopped before its report
        super().check(sig, out, err, swept)

    def stderr(self) -> list[str]:
        return [f"vnet: topology up ({', '.join(self.namespaces())}); tracing 16 points; "
                "sending 1000000 UDP datagrams cA -> cB and back"]

    def remains(self) -> dict[str, list]:
        return {"netns": netns_named("pt-vnet-", f"-{self.proc.pid}")}

    def swept(self, remains: dict[str, list]) -> list[str]:
        return [f"removed network namespace {ns} (vnet-demo of pid {self.proc.pid}, which is gone)"
                for ns in remains["netns"]]


class Simulate(Cmd):
    name = "simulate"
    waits = ("do_epoll_wait",)          # its sender's selector
    progs = 0
    after_kill = "doctor"
    swept_prefix = "pytrace tunnelmon simulate: "
    ROLES = ("ul", "h0", "h1", "h0c0", "h1c0")

    @property
    def sim(self) -> str:
        return f"psc{self.n}p{PID}"

    def argv(self) -> list[str]:
        return ["tunnelmon", "simulate", "--hosts", "2", "--clients", "1", "--rate", "5", "-d", "120",
                "--name", self.sim]

    def built(self) -> bool:
        return netns_named(f"{self.sim}-") == sorted(f"{self.sim}-{r}" for r in self.ROLES)

    def check(self, sig: int, out: str, err: str, swept: list[str] = ()) -> None:
        lines = out.splitlines()
        # the overlay, what to monitor it with, the traffic; no summary: stopped while it sends
        assert len(lines) == 5, out
        assert lines[0] == (f"Simulated VXLAN overlay {self.sim}: 2 hosts, 2 clients, VNIs 100,200, "
                            "IPv4 underlay, IPv4 overlay, UDP 4789"), out
        assert lines[1].split()[:5] == ["h0", f"{self.sim}-h0", "eth0", "192.0.2.1", "h0c0=203.0.113.10/vni100"]
        assert lines[2].split()[:5] == ["h1", f"{self.sim}-h1", "eth0", "192.0.2.2", "h1c0=203.0.113.11/vni100"]
        assert lines[3:] == [self.monitoring(), "Sending 2 ICMP flows at 5/s each, 120 s..."], out
        super().check(sig, out, err, swept)

    def monitoring(self) -> str:
        return f"Monitor it with: pytrace tunnelmon --netns {self.sim}-h0 --dev eth0 [--web 8080]"

    def remains(self) -> dict[str, list]:
        return {"netns": netns_named(f"{self.sim}-")}

    def swept(self, remains: dict[str, list]) -> list[str]:
        return [f"removed network namespace {ns} (tunnelmon-simulate of pid {self.proc.pid}, which is gone)"
                for ns in remains["netns"]]


class SimulateWeb(Simulate):
    name = "simulate-web"
    progs = 1
    after_kill = "next"
    web_path = "/api/stats"

    def argv(self) -> list[str]:
        return [*super().argv(), "--web", f"127.0.0.1:{self.port}"]

    def monitoring(self) -> str:
        return f"Monitoring h0 ({self.sim}-h0 eth0); web view: http://127.0.0.1:{self.port}/"


class TunnelmonWeb(Cmd):
    name = "tunnelmon-web"
    after_kill = "doctor"
    swept_prefix = "pytrace tunnelmon: "
    web_path = "/api/stats"

    def argv(self) -> list[str]:
        return ["tunnelmon", "--netns", NETNS, "--dev", "pt0", "--web", f"127.0.0.1:{self.port}"]

    def check(self, sig: int, out: str, err: str, swept: list[str] = ()) -> None:
        assert out.splitlines()[:2] == [f"Web view: http://127.0.0.1:{self.port}/",
                                        f"Tracing VXLAN (UDP 4789) on pt0 (netns {NETNS})... Hit Ctrl-C to end."]
        super().check(sig, out, err, swept)

    def remains(self) -> dict[str, list]:
        return {"tc filters": ours(NETNS, "pt0", self.proc.pid), "clsact": ["pt0"] if has_clsact(NETNS, "pt0") else []}

    def swept(self, remains: dict[str, list]) -> list[str]:
        return [*removal_lines(NETNS, "pt0", remains["tc filters"]),
                f"removed the clsact qdisc on pt0 in netns {NETNS}: made by a pytrace that is gone, nothing left on it"]


COMMANDS = {c.name: c for c in (Exporter, Replay, Demo, Simulate, SimulateWeb, TunnelmonWeb)}


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A run a failed case left running is stopped (SIGTERM: it removes what
    it built), then killed; namespaces still there go too."""
    yield
    while Run.started:
        run = Run.started.pop()
        if run.proc.poll() is None:
            run.proc.terminate()
            try:
                run.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.communicate()
        if isinstance(run, Cmd):
            for ns in run.remains().get("netns", []):
                sh(f"ip netns del {ns}", check=False)


# -- signals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [INT, TERM, HUP], ids=["INT", "TERM", "HUP"])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_signal_ends_it_as_documented(name, sig, ctx):
    run = COMMANDS[name](ctx)
    run.ready()
    run.exercise()
    rc, out, err = run.stop(sig)
    assert rc == run.statuses[sig], err
    run.check(sig, out, err)
    assert run.left() == {}


# -- two stops -------------------------------------------------------------------------------------------

# a pair and a gap a command, in turn (replay: a second SIGTERM or SIGHUP would end it
# by its default or not, as it lands before or after the exit; Ctrl-Cs: always 130)
DOUBLE_STOPS = {"exporter": (INT, TERM, 0), "replay": (INT, INT, 3), "vnet-demo": (TERM, INT, 10),
                "simulate": (HUP, TERM, 20), "simulate-web": (TERM, TERM, 40), "tunnelmon-web": (INT, HUP, 10)}
assert set(DOUBLE_STOPS) == set(COMMANDS)


@pytest.mark.parametrize("name,first,second,gap_ms", [(n, *p) for n, p in DOUBLE_STOPS.items()],
                         ids=[f"{n}-{signal.Signals(a).name[3:]}-{signal.Signals(b).name[3:]}-{g}ms"
                              for n, (a, b, g) in DOUBLE_STOPS.items()])
def test_a_double_stop_ends_it_as_one_does(name, first, second, gap_ms, ctx):
    run = COMMANDS[name](ctx)
    run.ready()
    run.exercise()
    rc, out, err = run.double_stop(first, second, gap_ms)
    assert rc == run.statuses[first], err
    run.check(first, out, err)
    assert run.left() == {}


# -- SIGKILL, then the next run or the cleanup ---------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if c.after_kill],
                         ids=[f"{n}-{c.after_kill}" for n, c in COMMANDS.items() if c.after_kill])
def test_after_sigkill_nothing_of_it_stays(name, ctx):
    """What the kernel does not free with the process (namespaces, tc
    filters) stays after a SIGKILL; the next run removes it, says so and
    ends with status 0 (or `pytrace doctor --cleanup` removes it); then
    nothing the dead run held is left."""
    cls = COMMANDS[name]
    dead = cls(ctx)
    dead.ready()
    dead.exercise()
    dead._note_held()
    remains = dead.remains()
    assert bool(remains) == (name != "exporter") and all(remains.values()), remains
    dead.proc.kill()
    dead.stop(None)
    assert dead.remains() == remains
    if cls.after_kill == "next":
        nxt = cls(ctx, like=dead)
        nxt.ready()
        assert dead.left() == {}, "left by the SIGKILLed run once the next one started"
        nxt.exercise()
        rc, out, err = nxt.stop(INT)
        assert rc == 0, err
        nxt.check(INT, out, err, swept=[nxt.swept_prefix + line for line in dead.swept(remains)])
        assert nxt.left() == {}
    else:
        res = run_cli("doctor", "--cleanup")
        assert (res.returncode, res.stderr) == (0, "")
        assert set(dead.swept(remains)) <= set(res.stdout.splitlines()), res.stdout
        assert dead.left() == {}

