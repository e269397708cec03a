"""A recording keeps whose its events were (sinks/record.py's labels table)
and gives them back, over records made here: no BPF, no privilege.  The
same path on real containers is tests/test_containers.py's."""

from __future__ import annotations

import sqlite3

import pytest

from pytrace.core.containers import Labels
from pytrace.core.errors import UsageError
from pytrace.sinks import EventSource, Session
from pytrace.sinks.record import Recorder, Recording

FIELDS = ("ts_ns", "cgroup_id", "netns", "pid")
FORMAT = "<QQII"
WEB = Labels(4242, "/machine.slice/libpod-" + "a" * 64 + ".scope", 4026532001, "podman", "a" * 64, "web")
HOST = Labels(17, "/system.slice/sshd.service", 4026531840)


class Labels2Ids:
    """A labeler over a fixed table (core/containers.Labeler reads cgroupfs)."""

    def __init__(self, *known: Labels):
        self.known = {(lab.cgroup_id, lab.netns): lab for lab in known}
        self.asked: list[tuple[int, int]] = []

    def labels(self, cgroup_id: int, netns: int) -> Labels:
        self.asked.append((cgroup_id, netns))
        return self.known[(cgroup_id, netns)]


def record(path, batches, labeler) -> None:
    rec = Recorder(str(path), Session("tcppktlat", ("--show-container",), "h", "6.1", 1, "0", "UTC"))
    rec.begin(EventSource("tcppktlat", "pytrace.tools.tcppktlat:TcpPktLat", "tcppktlat_event", FIELDS, FORMAT,
                          "tp_btf", (0, 0), lambda raw: raw, labeler))
    for batch in batches:
        rec.events(batch)
    rec.close()


def test_each_pair_is_asked_once_and_read_back(tmp_path):
    labeler = Labels2Ids(WEB, HOST)
    web, host = (WEB.cgroup_id, WEB.netns), (HOST.cgroup_id, HOST.netns)
    record(tmp_path / "r.db", [[(1, *web, 10), (2, *web, 10), (3, *host, 11)], [(4, *web, 10)]], labeler)
    assert labeler.asked == [web, host]
    assert Recording(str(tmp_path / "r.db")).labels() == {web: WEB, host: HOST}


def test_unlabelled_events_record_no_labels(tmp_path):
    record(tmp_path / "r.db", [[(1, 0, 0, 10)]], Labels2Ids())
    record(tmp_path / "s.db", [[(1, 0, 0, 10)]], None)
    assert Recording(str(tmp_path / "r.db")).labels() == {}
    assert Recording(str(tmp_path / "s.db")).labels() == {}


def test_a_recording_older_than_the_table_has_no_labels(tmp_path):
    record(tmp_path / "r.db", [[(1, 0, 0, 10)]], None)
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("DROP TABLE labels")
    assert Recording(str(tmp_path / "r.db")).labels() == {}


def test_damaged_labels_are_one_line(tmp_path):
    labeler = Labels2Ids(WEB)
    record(tmp_path / "r.db", [[(1, WEB.cgroup_id, WEB.netns, 10)]], labeler)
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE labels SET data = '[1, 2'")
    with pytest.raises(UsageError) as err:
        Recording(str(tmp_path / "r.db")).labels()
    assert "\n" not in str(err.value) and "labels" in str(err.value)
