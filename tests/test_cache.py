"""core/cachefile: a cache that another user cannot plant.

root's pytrace keeps files in a cache directory that steer what it runs
(compiled row code), dlopens (the libbpf a speculative load uses) and loads.
Here a second user, nobody (uid 65534, through setpriv), gets a cache
directory it can write, as a shared PYTRACE_CACHE or a /run/pytrace made
under umask 0 would be, and plants links and files in it; root's tool must
run as usual, never write through a link (a 0600 root file stays as it
was), and never run or dlopen anything from a directory others can write.
The payloads are real: the same files in a directory only root can write
are run and dlopen'ed, which is what proves the refusals mean something.
"""

from __future__ import annotations

import marshal
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from helpers import Cli, free_port, tcp_roundtrip, wait_until
from pytrace.core import cachefile

NOBODY = 65534
ROWS = f"rows-{sys.implementation.cache_tag}.marshal"
SPEC = "spec-tcpstates.marshal"
CACHE_FILES = ("features.json", ROWS, SPEC)
SECRET = b"root's alone\n"


def as_nobody(*cmd: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
                   check=True, capture_output=True, timeout=10)


@pytest.fixture
def shared_dir():
    """A directory in /tmp (which nobody can reach), root's and 0700 for now."""
    d = tempfile.mkdtemp(prefix="pt-cache-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def tcpstates(cache: str, *args: str, env: dict | None = None) -> tuple[list[str], str]:
    """root's `pytrace tcpstates -L PORT` with this cache: it must trace as
    usual (the lines of one connection), and stop with status 0."""
    port = free_port()
    cli = Cli("tcpstates", "-L", str(port), *args, env={"PYTRACE_CACHE": cache, **(env or {})})
    tcp_roundtrip("127.0.0.1", port)
    assert cli.read_until(lambda line: "LAST_ACK" in line and "CLOSE" in line), cli.seen
    rc, lines, err = cli.stop()
    assert rc == 0, err
    return lines, err


def test_links_planted_by_another_user_are_not_followed(shared_dir, victim):
    for how in ("others may write it", "nobody's"):
        if how == "nobody's":
            os.chmod(shared_dir, 0o700)
            os.chown(shared_dir, NOBODY, NOBODY)
        else:
            os.chmod(shared_dir, 0o777)
        for name in CACHE_FILES:
            as_nobody("ln", "-sf", str(victim), os.path.join(shared_dir, name))
        _, err = tcpstates(shared_dir)
        assert "cache" not in err                         # said only under -v
        assert victim.read_bytes() == SECRET
        assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600
        for name in os.listdir(shared_dir):               # nothing of root's was written there
            st = os.lstat(os.path.join(shared_dir, name))
            assert (name, st.st_uid, stat.S_ISLNK(st.st_mode)) == (name, NOBODY, True)
        assert sorted(os.listdir(shared_dir)) == sorted(CACHE_FILES)


def test_an_untrusted_directory_is_named_once_under_verbose(shared_dir):
    os.chmod(shared_dir, 0o777)
    _, err = tcpstates(shared_dir, "-v")
    said = [line for line in err.splitlines() if "cache directory" in line]
    assert said == [f"pytrace.cache: not using the cache directory {shared_dir}: writable by others (mode 777)"]


PLANTED_LIB = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void)
{
    int fd = open(MARKER, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
}
"""


def planted_library(where: str, marker: str) -> str:
    src = os.path.join(where, "planted.c")
    lib = os.path.join(where, "libplanted.so")
    with open(src, "w") as fh:
        fh.write(PLANTED_LIB)
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", lib, src], check=True)
    return lib


def rewrite(path: str, value: dict) -> None:
    """A cache file as root's pytrace would have written it: root's, 0600."""
    with open(path, "wb") as fh:
        fh.write(marshal.dumps(value))
    os.chmod(path, 0o600)


def plant_code(cache: str, marker: str) -> None:
    """Every remembered row comprehension replaced by one that also creates marker."""
    with open(os.path.join(cache, ROWS), "rb") as fh:
        codes = marshal.load(fh)
    assert codes
    touch = f"import os\nos.close(os.open({marker!r}, os.O_WRONLY | os.O_CREAT, 0o600))\n"
    rewrite(os.path.join(cache, ROWS), {src: compile(touch + src, "<planted>", "exec") for src in codes})


def plant_library(cache: str, known: dict, lib: str) -> None:
    """The remembered speculative loads (known) made to dlopen lib before libbpf."""
    rewrite(os.path.join(cache, SPEC), {argv: entry[:-1] + ((lib,) + entry[-1],) for argv, entry in known.items()})


def test_code_and_libraries_others_could_write_are_neither_run_nor_dlopened(shared_dir, tmp_path):
    cache, port = shared_dir, str(free_port())
    marker_code, marker_lib = str(tmp_path / "code-ran"), str(tmp_path / "lib-loaded")

    def run(env: dict | None = None) -> None:
        cli = Cli("tcpstates", "-L", port, env={"PYTRACE_CACHE": cache, **(env or {})})
        rc, _, err = cli.stop()
        assert rc == 0, err

    # what the next run of the same command finds (the load is remembered once it is attached)
    cli = Cli("tcpstates", "-L", port, env={"PYTRACE_CACHE": cache})
    assert wait_until(lambda: {ROWS, SPEC} <= set(os.listdir(cache)))
    assert cli.stop()[0] == 0
    assert all(stat.S_IMODE(os.stat(os.path.join(cache, n)).st_mode) == 0o600 for n in os.listdir(cache))
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    with open(os.path.join(cache, SPEC), "rb") as fh:
        known = marshal.load(fh)
    assert known
    plant_code(cache, marker_code)
    lib = planted_library(str(tmp_path), marker_lib)    # root's, in a directory only root can write
    plant_library(cache, known, lib)

    os.chmod(cache, 0o777)              # root's files, in a directory others may write
    run()
    os.chmod(cache, 0o700)
    os.chown(cache, NOBODY, NOBODY)     # in nobody's directory
    run()
    os.chown(cache, 0, 0)
    run({"PYTRACE_NO_CACHE": "1"})      # root's directory, no cache wanted
    assert not os.path.exists(marker_code) and not os.path.exists(marker_lib)
    run()                               # root's directory: the payloads are real
    assert os.path.exists(marker_code) and os.path.exists(marker_lib)

    # root's directory, naming a library that nobody could have replaced
    os.unlink(marker_lib)
    nobodys = tempfile.mkdtemp(prefix="pt-lib-", dir="/tmp")
    try:
        os.chown(nobodys, NOBODY, NOBODY)
        nobodys_lib = shutil.copy(lib, nobodys)
        plant_library(cache, known, nobodys_lib)
        run()
        assert not os.path.exists(marker_lib)
        os.chown(nobodys_lib, NOBODY, NOBODY)   # nobody's file in root's directory
        os.chown(nobodys, 0, 0)
        plant_library(cache, known, nobodys_lib)
        run()
        assert not os.path.exists(marker_lib)
    finally:
        shutil.rmtree(nobodys, ignore_errors=True)


def test_no_cache_writes_nothing(shared_dir):
    cache = os.path.join(shared_dir, "cache")
    tcpstates(cache, env={"PYTRACE_NO_CACHE": "1"})
    assert os.listdir(shared_dir) == []


# -- the library's own checks, in process ------------------------------------------

@pytest.fixture
def cache_at(monkeypatch):
    def point(path: str) -> None:
        monkeypatch.setattr(cachefile, "DIR", str(path))
    return point


def test_a_link_in_the_cache_is_replaced_never_written_through(tmp_path, victim, cache_at):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache_at(cache)
    os.symlink(victim, cache / "features.json")
    assert cachefile.read("features.json") is None        # O_NOFOLLOW: not read through
    cachefile.write("features.json", b"{}")
    assert victim.read_bytes() == SECRET
    assert not (cache / "features.json").is_symlink()
    assert cachefile.read("features.json") == b"{}"
    assert sorted(os.listdir(cache)) == ["features.json"]     # no temporary file left


def test_a_fifo_in_the_cache_does_not_hang_the_reader(tmp_path, cache_at):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache_at(cache)
    os.mkfifo(cache / ROWS, 0o600)
    assert cachefile.read(ROWS) is None


def test_the_directory_is_made_0700_whatever_the_umask(tmp_path, cache_at):
    cache_at(tmp_path / "new")
    old = os.umask(0)
    try:
        cachefile.write("features.json", b"{}")
    finally:
        os.umask(old)
    st = os.stat(tmp_path / "new")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, os.geteuid())
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "features.json").st_mode) == 0o600
