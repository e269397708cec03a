"""Filters and labels by cgroup, network namespace and container (issue 21),
against real containers (containerlab.py): podman containers A and B and a
systemd-nspawn container N on the cached Debian root, and the host, all
making the same traffic at once (ctrload.py), each on a port of its own, so
that every event says whose it is.

Per tool, filtered on container A: A's events are there, and the leaks
(events of B, N or the host) are counted and must be 0; every event's labels
(cgroup id and path, netns, runtime, container id and name) are exactly A's.
Interval tools: activity under A's filter, the processes and ports of its
rows A's alone, and nothing at all under a filter on an idle cgroup.  Then:
a container that starts after the tool is followed; a cgroup with
descendants; a netns; BCC's pinned --cgroupmap/--mntnsmap; the CLI's
CONTAINER column and --json labels; each variant of each tool loads with
every filter and the labels on.  Nothing is left behind: containers,
cgroups (containerlab.Lab.leftovers), BPF objects (kernelstate).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time

import pytest

from pytrace.core.containers import Labels
from pytrace.core.errors import PytraceError, UsageError
from pytrace.tools.count import TracepointCount
from pytrace.tools.gethostlatency import GetHostLatency
from pytrace.tools.so1stbyte import So1stByte
from pytrace.tools.soaccept import SoAccept
from pytrace.tools.socketio import SocketIO
from pytrace.tools.sockrmem import SockRmem
from pytrace.tools.socksize import SockSize
from pytrace.tools.sockstat import SockStat
from pytrace.tools.soconnect import SoConnect
from pytrace.tools.soconnlat import SoConnLat
from pytrace.tools.sofamily import SoFamily
from pytrace.tools.solisten import SoListen
from pytrace.tools.soprotocol import SoProtocol
from pytrace.tools.sofdsnoop import SoFdSnoop
from pytrace.tools.superping import SuperPing
from pytrace.tools.tcpaccept import TcpAccept
from pytrace.tools.tcpconnect import TcpConnect
from pytrace.tools.tcpconnlat import TcpConnLat
from pytrace.tools.tcpdrop import TcpDrop
from pytrace.tools.tcplife import TcpLife
from pytrace.tools.tcpretrans import TcpRetrans
from pytrace.tools.tcprtt import TcpRtt
from pytrace.tools.tcpstates import TcpStates
from pytrace.tools.tcpsubnet import TcpSubnet
from pytrace.tools.tcpsynbl import TcpSynBl
from pytrace.tools.tcptop import TcpTop
from pytrace.tools.tcppktlat import TcpPktLat
from pytrace.tools.tcptracer import TcpTracer
from pytrace.tools.tcpwin import TcpWin
from pytrace.tools.udpconnect import UdpConnect

import kernelstate
from containerlab import Lab
from helpers import Cli, run_cli, wait_until
from matrix import opened

pytestmark = pytest.mark.timeout(600)

PORTS = {"A": 41101, "B": 41102, "H": 41103, "LATE": 41104, "N": 41105}
NAMES = {"A": "pytrace-a", "B": "pytrace-b", "LATE": "pytrace-late", "N": "pytrace-n"}
DURATION = 1.2          # seconds each tool traces; each participant connects every 50 ms (~24 times)


@pytest.fixture(scope="module")
def lab():
    before = kernelstate.snapshot()
    with Lab() as lab:
        lab.a = lab.podman(NAMES["A"], PORTS["A"])
        lab.b = lab.podman(NAMES["B"], PORTS["B"])
        lab.n = lab.nspawn(NAMES["N"], PORTS["N"])
        lab.h = lab.host(PORTS["H"])
        lab.idle = lab.idle_cgroup(f"{NAMES['A']}-idle")
        try:
            yield lab
        finally:
            lab.close()
            left = lab.leftovers()
    assert not left, f"left behind: {left}"
    assert not kernelstate.left_since(before), "BPF objects left in the kernel"


def owner_of_ports(ports: set[int]) -> str | None:
    """Whose traffic an event is, by the ports it names."""
    owners = {name for name, port in PORTS.items() if port in ports}
    assert len(owners) <= 1, f"ports {ports} name several participants"
    return owners.pop() if owners else None


def expected_labels(box) -> Labels:
    return Labels(box.leaf.id, box.leaf.path, box.netns, box.runtime, box.id, box.name)


# -- event tools: (tracer class, its keywords, the ports of an event, or None to judge by PID) ---

EVENT_TOOLS = {
    "tcpconnect": (TcpConnect, {}, lambda e: {e.rport}),
    "tcpconnlat": (TcpConnLat, {}, lambda e: {e.rport}),
    "tcpaccept": (TcpAccept, {}, lambda e: {e.lport}),
    "tcptracer": (TcpTracer, {}, lambda e: {e.sport, e.dport}),
    "tcplife": (TcpLife, {}, lambda e: {e.lport, e.rport}),
    "tcpstates": (TcpStates, {}, lambda e: {e.lport, e.rport}),
    "tcppktlat": (TcpPktLat, {}, lambda e: {e.lport, e.rport}),
    "tcpwin": (TcpWin, {}, lambda e: {e.lport, e.rport}),
    "soconnect": (SoConnect, {}, lambda e: {e.port}),
    "soaccept": (SoAccept, {}, lambda e: {e.lport}),
    "udpconnect": (UdpConnect, {}, lambda e: {e.rport}),
    "solisten": (SoListen, {}, None),           # ephemeral ports: by PID
    "gethostlatency": (GetHostLatency, {}, None),
}


@contextlib.contextmanager
def _usable(cls, *args, **kw):
    """The tracer opened (closed after), or the test skipped naming what this kernel lacks."""
    tracer = cls(*args, **kw)
    try:
        tracer.open()
    except PytraceError as exc:
        if "no hook usable" in str(exc):
            pytest.skip(f"{cls.__name__}: {exc}")
        raise
    try:
        yield tracer
    finally:
        tracer.close()


def _extra(tool: str, lab) -> dict:
    if tool == "gethostlatency":      # the containers' libc: the root's (the host's own is another file)
        return {"libc": str(next(lab.root.glob("usr/lib/*-linux-gnu/libc.so.6")))}
    return {}


@pytest.mark.parametrize("tool", sorted(EVENT_TOOLS))
def test_event_tool_container_filter_exact(lab, tool):
    cls, kw, ports_of = EVENT_TOOLS[tool]
    with _usable(cls, container=NAMES["A"], labels=True, **kw, **_extra(tool, lab)) as t:
        events = list(t.events(duration=DURATION))
    a_pids = lab.a.pids()
    others = {"B": lab.b.pids(), "N": lab.n.pids(), "H": lab.h.pids()}
    mine, leaks, unknown = [], [], []
    for e in events:
        owner = owner_of_ports(ports_of(e)) if ports_of is not None else None
        if owner is None:       # no participant's port (a listen on a port of the kernel's choice): its PID
            owner = "A" if e.pid in a_pids else next((k for k, p in others.items() if e.pid in p), None)
        (mine if owner == "A" else unknown if owner is None else leaks).append(e)
    assert mine, f"{tool}: no event of container A in {DURATION}s ({len(events)} events)"
    assert len(leaks) == 0, f"{tool}: {len(leaks)} events of other participants leaked: {leaks[:3]}"
    assert not unknown, f"{tool}: events of no participant: {unknown[:3]}"
    want = expected_labels(lab.a)
    wrong = [e for e in events if e.labels != want or e.cgroup_id != want.cgroup_id]
    assert not wrong, f"{tool}: labels {wrong[0].labels} != {want}"


def test_nspawn_container_and_its_descendant_cgroup(lab):
    """N's processes run in machine-N.scope/payload: filtering by the
    container (or by its scope's path) takes the descendant in."""
    by_name = _events(TcpConnect, container=NAMES["N"], labels=True)
    by_path = _events(TcpConnect, cgroup=lab.n.cgroup.path)
    for events in (by_name, by_path):
        owners = [owner_of_ports({e.rport}) for e in events]
        assert owners and set(owners) == {"N"}, owners
    assert lab.n.leaf.path == f"{lab.n.cgroup.path}/payload"
    assert {e.labels for e in by_name} == {Labels(lab.n.leaf.id, lab.n.leaf.path, lab.n.netns, "nspawn", None,
                                                  NAMES["N"])}


def _events(cls, duration: float = DURATION, **kw) -> list:
    with _usable(cls, **kw) as t:
        return list(t.events(duration=duration))


def test_cgroup_with_descendants_and_netns(lab):
    parent = lab.a.cgroup.path.rsplit("/", 1)[0]             # podman's parent of A and B
    by_parent = {owner_of_ports({e.rport}) for e in _events(TcpConnect, cgroup=parent)}
    assert by_parent == {"A", "B"}
    by_id = {owner_of_ports({e.rport}) for e in _events(TcpConnect, cgroup=str(lab.b.cgroup.id))}
    assert by_id == {"B"}
    by_netns = [e for e in _events(TcpStates, netns=f"/proc/{lab.b.pid}/ns/net", labels=True)]
    b_pids = lab.b.pids()
    assert {owner_of_ports({e.lport, e.rport}) or ("B" if e.pid in b_pids else None) for e in by_netns} == {"B"}
    assert {e.netns for e in by_netns} == {lab.b.netns}
    by_inode = {owner_of_ports({e.rport}) for e in _events(TcpConnect, netns=lab.n.netns)}
    assert by_inode == {"N"}


def test_container_started_later_is_followed(lab):
    """The tool runs first, filtered on a container that does not exist yet;
    the container starts, and its events (only its) come."""
    got = []
    with _usable(TcpConnect, container=NAMES["LATE"], labels=True) as t:
        late = None
        try:
            deadline = time.monotonic() + 60
            for batch in t.batches():
                got.extend(t.make_event(r) for r in batch)
                if late is None:
                    assert not got, f"events before the container started: {got[:3]}"
                    late = lab.podman(NAMES["LATE"], PORTS["LATE"])
                if len(got) >= 5 or time.monotonic() > deadline:
                    break
            assert late is not None and t.scope.followed, "the container was not followed"
            assert [c.name for c in t.scope.followed.values()] == [NAMES["LATE"]]
        finally:
            if late is not None:
                lab.stop(late)
    owners = {owner_of_ports({e.rport}) for e in got}
    assert len(got) >= 5 and owners == {"LATE"}, (len(got), owners)
    assert {e.labels for e in got} == {expected_labels(late)}


def late_connects(lab, parts: tuple[str, ...], container: str) -> tuple[list, object]:
    """tcpconnect's labelled events (5, or what 30 s bring) filtered on
    `container`, of the traffic of a cgroup at `parts` made after the tool
    started; and that traffic's box (stopped)."""
    with _usable(TcpConnect, container=container, labels=True) as t:
        assert not t.scope.followed
        box = lab.in_cgroup(parts, PORTS["LATE"])
        try:
            got = []
            deadline = time.monotonic() + 30
            for batch in t.batches():
                got.extend(t.make_event(r) for r in batch)
                if len(got) >= 5 or time.monotonic() > deadline:
                    break
        finally:
            lab.stop(box)
    return got, box


def test_kubelet_cgroup_layout_labels_and_follow(lab):
    """Traffic in cgroups laid out as a kubelet (systemd driver) and
    containerd lay a pod's container, made after the tool started: followed
    by the container id's prefix, labelled with the pod UID and runtime from
    the path (no Kubernetes here: the pod's name needs the runtime's state)."""
    uid = "0b6f1f2e-4a59-4c3e-9d7c-1234567890ab"
    cid = "c0ffee" + "0123456789abcdef" * 3 + "0123456789"
    parts = ("kubepods.slice", "kubepods-burstable.slice", f"kubepods-burstable-pod{uid.replace('-', '_')}.slice",
             f"cri-containerd-{cid}.scope")
    got, box = late_connects(lab, parts, container=cid[:12])
    assert len(got) >= 5 and {owner_of_ports({e.rport}) for e in got} == {"LATE"}
    path = "/" + "/".join(parts)
    assert {e.labels for e in got} == {Labels(box.leaf.id, path, box.netns, "containerd", cid, None, None, None,
                                              uid)}


@pytest.fixture
def rootless_user(tmp_path):
    """A user of the test's own (uid, home), with its home in tmp_path; removed after."""
    name = f"ptrl{os.getpid() % 100000}"
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        uid = int(subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True).stdout)
        yield uid, home
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_rootless_podman_container_is_named_from_its_users_storage(lab, rootless_user):
    """A rootless podman's container (its cgroup under the user's systemd,
    user@UID.service) is named from that user's storage
    (~/.local/share/containers/storage, as podman writes it): --container
    takes the name, followed from its start, and labels carry it.  Rootless
    podman itself needs a user systemd this machine has not: its cgroup and
    state are laid out as it lays them."""
    uid, home = rootless_user
    cid = "beef" + "0123456789abcdef" * 3 + "0123456789ab"
    storage = home / ".local/share/containers/storage/overlay-containers"
    storage.mkdir(parents=True)
    (storage / "containers.json").write_text(json.dumps(
        [{"id": "1" * 64, "names": ["someone-else"]}, {"id": cid, "names": ["rootless-web"], "image": "x"}]))
    parts = ("user.slice", f"user-{uid}.slice", f"user@{uid}.service", "user.slice", f"libpod-{cid}.scope")
    got, box = late_connects(lab, parts, container="rootless-web")
    assert len(got) >= 5 and {owner_of_ports({e.rport}) for e in got} == {"LATE"}
    path = "/" + "/".join(parts)
    assert {e.labels for e in got} == {Labels(box.leaf.id, path, box.netns, "podman", cid, "rootless-web",
                                              None, None, None)}


# -- interval tools: activity under A's filter (its PIDs and ports only), none under an idle cgroup ----

INTERVAL_TOOLS = {
    # name: (class, keywords, read(tracer) -> (amount, pids or None, ports or None))
    "sockstat": (SockStat, {}, lambda t: (sum(t.counts().values()), None, None)),
    "sofamily": (SoFamily, {}, lambda t: (sum(c.count for c in t.counts()), {c.pid for c in t.counts()}, None)),
    "soprotocol": (SoProtocol, {}, lambda t: (sum(c.count for c in t.counts()), {c.pid for c in t.counts()},
                                              None)),
    "soconnlat": (SoConnLat, {}, lambda t: (sum(h.count for h in t.histograms().values()),
                                            {k.pid for k in t.histograms()}, None)),
    "so1stbyte": (So1stByte, {}, lambda t: (sum(h.count for h in t.histograms().values()),
                                            {k.pid for k in t.histograms()}, None)),
    "socketio": (SocketIO, {}, lambda t: (sum(f.calls for f in t.flows()), {f.pid for f in t.flows()},
                                          {p for f in t.flows() for p in (f.rport,)})),
    "socksize": (SockSize, {}, lambda t: (sum(h.count for h in t.histograms().values()),
                                          {k.pid for k in t.histograms()}, None)),
    "sockrmem": (SockRmem, {}, lambda t: (t.histograms()[0].count, None, None)),
    "tcptop": (TcpTop, {}, lambda t: (sum(f.tx_bytes + f.rx_bytes for f in t.read()), {f.pid for f in t.read()},
                                      {p for f in t.read() for p in (f.lport, f.rport)})),
    "tcprtt": (TcpRtt, {}, lambda t: (sum(h.count for h in t.histograms().values()), None, None)),
    "tcpsynbl": (TcpSynBl, {}, lambda t: (sum(h.count for h in t.histograms().values()), None, None)),
    "tcpsubnet": (TcpSubnet, {"subnets": "127.0.0.0/8"}, lambda t: (sum(r.bytes for r in t.read()), None, None)),
    "count": (TracepointCount, {"tracepoints": ["syscalls:sys_enter_connect"], "per_process": True},
              lambda t: (sum(c.count for c in t.counts()), {c.pid for c in t.counts()}, None)),
}


@pytest.mark.parametrize("tool", sorted(INTERVAL_TOOLS))
def test_interval_tool_container_filter_exact(lab, tool):
    cls, kw, read = INTERVAL_TOOLS[tool]
    kw = dict(kw)
    args = (kw.pop("subnets"),) if "subnets" in kw else (kw.pop("tracepoints"),) if "tracepoints" in kw else ()
    with _usable(cls, *args, container=NAMES["A"], **kw) as mine, cls(*args, cgroup=lab.idle.path, **kw) as idle:
        time.sleep(DURATION)
        amount, pids, ports = read(mine)
        idle_amount, idle_pids, _ = read(idle)
    assert amount > 0, f"{tool}: nothing counted for container A"
    if pids is not None:
        assert pids <= lab.a.pids(), f"{tool}: PIDs {pids - lab.a.pids()} are not container A's"
    if ports is not None:
        leaked = {p for p in ports if p in PORTS.values() and p != PORTS["A"]}
        assert not leaked, f"{tool}: ports of other participants {leaked}"
    assert idle_amount == 0 and not idle_pids, f"{tool}: {idle_amount} counted in an idle cgroup"


def test_top_rows_labelled_in_the_library_the_cli_and_a_replay(lab, tmp_path):
    """tcptop's rows, per task and connection, each with its container: the
    library's rows carry A's labels exactly; the CLI's CONTAINER column and
    --json name A; a recording replays them."""
    with _usable(TcpTop, container=NAMES["A"], labels=True) as top:
        time.sleep(DURATION)
        flows = top.read()
    assert flows and {f.pid for f in flows} <= lab.a.pids()
    assert {f.labels for f in flows} == {expected_labels(lab.a)}
    assert {(f.cgroup_id, f.netns) for f in flows} == {(lab.a.leaf.id, lab.a.netns)}

    path = tmp_path / "tcptop.db"
    r = run_cli("tcptop", "--container", NAMES["A"], "--show-container", "-C", "--record", str(path), "1", "2")
    assert r.returncode == 0, r.stderr
    for out in (r.stdout, run_cli("replay", str(path)).stdout):
        lines = out.splitlines()
        heads = [i for i, line in enumerate(lines) if line.startswith("CONTAINER")]
        assert heads and lines[heads[0]].split()[:3] == ["CONTAINER", "PID", "COMM"], out
        rows = [line for i in heads for line in lines[i + 1:] if line.strip() and not line.startswith("CONTAINER")
                and "loadavg" not in line]
        assert rows and {row.split()[0] for row in rows} == {NAMES["A"]}, out
    want = expected_labels(lab.a).to_dict()
    for args in (("tcptop", "--container", NAMES["A"], "--show-container", "--json", "1", "1"),
                 ("replay", "--json", str(path))):
        js = run_cli(*args)
        recs = [json.loads(line) for line in js.stdout.splitlines()]
        assert js.returncode == 0 and recs, js.stderr
        assert all({k: rec[k] for k in want} == want and rec["pid"] in lab.a.pids() for rec in recs), recs


# -- BCC's pinned maps -------------------------------------------------------------------------------

@pytest.fixture
def pinned(tmp_path):
    made = []

    def pin(name: str, key: int, value_size: int, kind: str = "hash", key_size: int = 8) -> str:
        """A map pinned as BCC's special_filtering.md has users make it, holding key."""
        path = f"/sys/fs/bpf/pytrace-test-{name}-{os.getpid()}"
        subprocess.run(["bpftool", "map", "create", path, "type", kind, "key", str(key_size),
                        "value", str(value_size), "entries", "16", "name", f"pt_t_{name}"[:15]],
                       check=True, capture_output=True)
        made.append(path)
        hexes = lambda raw: [f"0x{b:02x}" for b in raw]     # noqa: E731
        subprocess.run(["bpftool", "map", "update", "pinned", path,
                        "key", *hexes(key.to_bytes(key_size, "little")),
                        "value", *hexes(b"\x01" + b"\0" * (value_size - 1))], check=True, capture_output=True)
        return path
    if not shutil.which("bpftool"):
        pytest.fail("bpftool is not installed (scripts/setup.sh installs it)")
    yield pin
    for path in made:
        os.unlink(path)


def test_bcc_pinned_cgroupmap_and_mntnsmap(lab, pinned):
    cgmap = pinned("cg", lab.b.leaf.id, 8)                  # as BCC's special_filtering.md: u64 -> u64
    mntmap = pinned("mnt", lab.a.mntns, 4)                  # u64 -> u32
    by_cg = {owner_of_ports({e.rport}) for e in _events(TcpConnect, cgroupmap=cgmap)}
    by_mnt = {owner_of_ports({e.lport}) for e in _events(TcpAccept, mntnsmap=mntmap)}
    assert by_cg == {"B"} and by_mnt == {"A"}
    with pytest.raises(UsageError, match="No such file"):
        TcpConnect(cgroupmap="/sys/fs/bpf/pytrace-test-none").open()
    with pytest.raises(UsageError, match="a hash map with 8-byte keys is wanted"):
        TcpConnect(mntnsmap=pinned("arr", 0, 4, kind="array", key_size=4)).open()


# -- the command line ------------------------------------------------------------------------------------

def test_cli_container_column_and_json_labels(lab):
    text = Cli("tcpconnect", "--container", NAMES["A"], "--show-container")
    wait_until(lambda: len(text.seen) >= 4 or text.read_until(lambda line: False, 0.2) is not None, 10)
    rc, lines, err = text.stop()
    assert rc == 0, err
    head = next(line for line in lines if line.startswith("CONTAINER"))
    rows = lines[lines.index(head) + 1:]
    assert head.split()[:3] == ["CONTAINER", "PID", "COMM"]
    assert rows and {r.split()[0] for r in rows} == {NAMES["A"]}
    assert {r.split()[-1] for r in rows} == {str(PORTS["A"])}        # DPORT, last as in BCC

    js = Cli("tcpaccept", "--container", lab.a.id[:12], "--show-container", "--json")
    wait_until(lambda: js.read_until(lambda line: False, 0.2) is not None or len(js.seen) >= 3, 10)
    rc, _, err = js.stop()
    recs = js.json_records()
    assert rc == 0 and recs, err
    want = expected_labels(lab.a).to_dict()
    for rec in recs:
        assert rec["lport"] == PORTS["A"]
        assert {k: rec[k] for k in want} == want


def test_cli_declared_tool_container_column_and_json_labels(lab):
    """A tool declared by its ToolSpec gets the SCOPE's options, the column and the labels from the spec."""
    text = Cli("tcpstates", "--container", NAMES["A"], "--show-container")
    wait_until(lambda: len(text.seen) >= 6 or text.read_until(lambda line: False, 0.2) is not None, 10)
    rc, lines, err = text.stop()
    assert rc == 0, err
    head = next(line for line in lines if line.startswith("CONTAINER"))
    assert head.split()[:3] == ["CONTAINER", "SKADDR", "C-PID"]
    rows = lines[lines.index(head) + 1:]
    assert rows and {r.split()[0] for r in rows} == {NAMES["A"]}
    assert any(str(PORTS["A"]) in r.split() for r in rows)     # (A's listen() on a port of the kernel's choice too)

    js = Cli("tcppktlat", "--container", NAMES["A"], "--json")
    wait_until(lambda: js.read_until(lambda line: False, 0.2) is not None or len(js.seen) >= 3, 10)
    rc, _, err = js.stop()
    recs = js.json_records()
    assert rc == 0 and recs, err
    assert all(PORTS["A"] in (rec["lport"], rec["rport"]) for rec in recs)
    assert all("container" not in rec for rec in recs)      # labels only when asked for

    js = Cli("tcppktlat", "--container", NAMES["A"], "--show-container", "--json")
    wait_until(lambda: js.read_until(lambda line: False, 0.2) is not None or len(js.seen) >= 3, 10)
    rc, _, err = js.stop()
    recs = js.json_records()
    assert rc == 0 and recs, err
    want = expected_labels(lab.a).to_dict()
    for rec in recs:
        assert PORTS["A"] in (rec["lport"], rec["rport"])
        assert {k: rec[k] for k in want} == want


def _labelled_run(tool: str, *extra: str, n: int = 4, env: dict | None = None) -> list[str]:
    cli = Cli(tool, "--container", NAMES["A"], "--show-container", *extra, env=env)
    wait_until(lambda: len(cli.seen) >= n or cli.read_until(lambda line: False, 0.2) is not None, 10)
    rc, lines, err = cli.stop()
    assert rc == 0, err
    return lines


@pytest.mark.parametrize("tool", ["tcppktlat", "tcpconnect"])      # declared by its ToolSpec; not yet
def test_labels_are_recorded_and_replayed(lab, tmp_path, tool):
    path = tmp_path / f"{tool}.db"
    _labelled_run(tool, "--record", str(path))
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT cgroup_id, netns, data FROM labels").fetchall()
    want = expected_labels(lab.a).to_dict()
    assert [(cg, ns, json.loads(d)) for cg, ns, d in rows] == [(want["cgroup_id"], want["netns"], want)]

    text = run_cli("replay", str(path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("CONTAINER"))
    assert lines[head + 1:] and {r.split()[0] for r in lines[head + 1:]} == {NAMES["A"]}

    js = run_cli("replay", "--json", str(path))
    assert js.returncode == 0, js.stderr
    recs = [json.loads(line) for line in js.stdout.splitlines()]
    assert recs and all({k: r[k] for k in want} == want for r in recs)


def test_labels_are_influx_tags(lab, tmp_path):
    from influxlab import ENV, influx_server
    with influx_server(tmp_path / "influxdb") as server:
        lines = _labelled_run("tcppktlat", "--json", "--influx", server.url("labels"), env=ENV)
        assert wait_until(lambda: server.count("labels", "tcppktlat") == len(lines), 15)
        tags = server.query('SHOW TAG VALUES FROM "tcppktlat" WITH KEY IN ("container", "runtime", "cgroup")',
                            "labels")
    want = expected_labels(lab.a)
    assert {(t["key"], t["value"]) for t in tags} == {("container", want.container), ("runtime", want.runtime),
                                                     ("cgroup", want.cgroup)}


def test_exporter_counts_events_by_container(lab, tmp_path):
    """Prometheus labels: count_by a label field (labels=True implied), with the
    tool's container filter as an option: two containers' accepts, no one else's."""
    from test_exporter import Exporter
    exp = Exporter(tmp_path, f"""[[metric]]
tool = "tcpaccept"
count_by = ["container", "runtime"]
options = {{ container = ["{NAMES['A']}", "{NAMES['B']}"] }}
""")
    try:
        def counts() -> dict:
            return {(s.labels["container"], s.labels["runtime"]): s.value
                    for s in exp.scrape().get("pytrace_tcpaccept_events", []) if s.name.endswith("_total")}
        assert wait_until(lambda: len(counts()) == 2 and min(counts().values()) >= 3, 10), counts()
        got = counts()
    finally:
        rc, err = exp.stop()
    assert rc == 0, err
    assert set(got) == {(NAMES["A"], "podman"), (NAMES["B"], "podman")}, got


def test_cli_bad_filters_one_line(lab):
    for args, needle in ((["--cgroup", "/no/such/cgroup"], "cgroup /no/such/cgroup"),
                         (["--netns", "no-such-ns"], "no-such-ns"),
                         (["--container", "a/b"], "not a container name"),
                         (["--cgroupmap", "relative"], "absolute path")):
        proc = run_cli("tcpconnect", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_cli("softirqs", "--container=x")           # device-level: no such filter
    assert proc.returncode == 2 and "unrecognized arguments: --container=x" in proc.stderr


# -- every variant loads with every filter on --------------------------------------------------------------

ALL_TOOLS = [TcpConnect, TcpConnLat, TcpAccept, TcpTracer, TcpLife, TcpStates, TcpPktLat, TcpWin, TcpRetrans, TcpDrop,
             SoConnect, SoAccept, UdpConnect, SoListen, GetHostLatency, SuperPing, SockStat, SoFamily,
             SoProtocol, SoConnLat, So1stByte, SocketIO, SockSize, SockRmem, TcpTop, TcpRtt, TcpSynBl, TcpSubnet,
             TracepointCount, SoFdSnoop]


def _variants() -> list:
    return [pytest.param(cls, v.hook, id=f"{cls.OBJECT}-{v.hook}") for cls in ALL_TOOLS for v in cls.VARIANTS]


@pytest.mark.parametrize("cls,hook", _variants())
def test_every_variant_loads_with_every_filter(lab, pinned, cls, hook):
    """The filters' code is dead unless on: here it is on, all of it, for the
    verifier of each variant this kernel allows (matrix.opened skips the others)."""
    kw = {k: v for k, v in (("cgroup", lab.a.cgroup.path), ("netns", lab.a.netns), ("container", NAMES["A"]))
          if k in cls.SCOPE}
    if "cgroupmap" in cls.SCOPE:
        kw["cgroupmap"] = pinned("cg", lab.a.leaf.id, 8)
    if "mntnsmap" in cls.SCOPE:
        kw["mntnsmap"] = pinned("mnt", lab.a.mntns, 4)
    if "labels" in cls.SCOPE:
        kw["labels"] = True
    args = ("127.0.0.0/8",) if cls is TcpSubnet else (["syscalls:sys_enter_connect"],) \
        if cls is TracepointCount else ()
    with opened(cls, hook, *args, **kw) as t:
        assert t.obj.rodata["pt_by_cgroup"] is True and t.obj.rodata["pt_netns"] == lab.a.netns
        assert t.obj.rodata.get("pt_by_cgroupmap") == ("cgroupmap" in cls.SCOPE or None)
        assert t.scope.followed and {c.name for c in t.scope.followed.values()} == {NAMES["A"]}
