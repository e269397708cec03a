"""Which container a cgroup path is (core/containers.classify), for the cgroup
layouts of every runtime --container resolves: podman and cri-o (with and
without systemd), docker (systemd and cgroupfs drivers), containerd under a
kubelet (systemd and cgroupfs drivers), and systemd-nspawn.

podman and nspawn are also run for real by tests/test_containers.py; the
others have no image here, so their layouts are checked as the runtimes
write them (their documentation and source: docker's cgroup driver, the
kubelet's pod slices, CRI-O's conmon scopes)."""

from __future__ import annotations

import pytest

from pytrace.core.containers import classify

ID = "3f2a" + "0123456789abcdef" * 3 + "cafe0123abcd"      # 64 hex digits
POD = "1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081"
POD_UNDERSCORED = POD.replace("-", "_")


@pytest.mark.parametrize("path,want", [
    # podman: systemd driver (root, and a user's slice), cgroupfs driver
    (f"/machine.slice/libpod-{ID}.scope", ("podman", ID, None)),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope", ("podman", ID, None)),
    (f"/libpod_parent/libpod-{ID}", ("podman", ID, None)),
    # docker: systemd driver, cgroupfs driver
    (f"/system.slice/docker-{ID}.scope", ("docker", ID, None)),
    (f"/docker/{ID}", ("docker", ID, None)),
    # containerd under a kubelet: systemd driver (pod uid with _), cgroupfs driver; nerdctl
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UNDERSCORED}.slice/"
     f"cri-containerd-{ID}.scope", ("containerd", ID, POD)),
    (f"/kubepods.slice/kubepods-pod{POD_UNDERSCORED}.slice/cri-containerd-{ID}.scope", ("containerd", ID, POD)),
    (f"/system.slice/nerdctl-{ID}.scope", ("containerd", ID, None)),
    # cri-o: systemd driver
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UNDERSCORED}.slice/"
     f"crio-{ID}.scope", ("cri-o", ID, POD)),
    # systemd-nspawn: the machine's name, unescaped
    ("/machine.slice/machine-web.scope", ("nspawn", "web", None)),
    ("/machine.slice/machine-my\\x2dbox.scope", ("nspawn", "my-box", None)),
])
def test_a_containers_own_cgroup(path, want):
    assert classify(path) == want


@pytest.mark.parametrize("path", [
    "/", "/system.slice", "/system.slice/sshd.service", "/user.slice/user-1000.slice/session-3.scope",
    f"/machine.slice/libpod-conmon-{ID}.scope",        # podman's monitor, not the container
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UNDERSCORED}.slice/crio-conmon-{ID}.scope",
    f"/system.slice/docker-{ID[:12]}.scope",            # a short id is not a runtime's cgroup name
    "/machine.slice/machine-web.scope/payload",        # below a container: its own cgroup is the parent
    "/other.slice/machine-web.scope",                  # a machine scope outside machine.slice
    f"/elsewhere/{ID}",                                # a bare id under neither docker nor a pod
])
def test_not_a_containers_own_cgroup(path):
    assert classify(path) is None
