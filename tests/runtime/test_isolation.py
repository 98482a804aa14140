"""A container is isolated the way runc isolates one: checked from inside, for real."""

from __future__ import annotations

import os
import tempfile

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def sh(cli, script: str, *opts: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    result = cli("run", "--rm", *opts, "base", "bash", "-c", script)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_pid_namespace_has_init_as_pid_1_and_the_command_as_pid_2(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "ps -eo pid=,args=; true")
    assert code == 0
    rows = [line.split()[:2] for line in out.splitlines()]
    assert rows[0] == ["1", "tini"]
    assert rows[1] == ["2", "bash"]
    assert len(rows) == 3  # init, bash, ps: no host process is visible


def test_hostname_and_uts(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "hostname; cat /etc/hostname", "--hostname", "lab1")
    assert code == 0 and out.split() == ["lab1", "lab1"]


def test_network_namespace_has_only_loopback_and_it_is_up(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "ls /sys/class/net; ip -o link show lo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "lo"
    assert "UP" in lines[1]


def test_namespaces_differ_from_the_host(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "for n in pid mnt uts ipc net cgroup; do readlink /proc/1/ns/$n; done")
    assert code == 0
    for line in out.splitlines():
        kind = line.split(":")[0]
        host = os.readlink(f"/proc/self/ns/{kind}")
        assert line != host, f"{kind} namespace is the host's"


def test_root_is_an_overlay_and_host_files_are_unreachable(cli) -> None:  # type: ignore[no-untyped-def]
    with tempfile.NamedTemporaryFile(prefix="host-marker-", dir="/tmp") as marker:
        name = os.path.basename(marker.name)
        code, out, _ = sh(cli, f"findmnt -no FSTYPE /; find / -xdev -name {name} | wc -l; "
                               "ls /proc/1/root/ | wc -l")  # fmt: skip
    assert code == 0
    fstype, found, _entries = out.split()
    assert fstype == "overlay"
    assert found == "0"


def test_capabilities_are_dockers_fourteen_and_no_new_privs(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status")
    assert code == 0
    fields = dict(line.split(":\t") for line in out.splitlines())
    assert fields["CapEff"] == fields["CapBnd"] == fields["CapPrm"] == "00000000a80425fb"
    assert fields["NoNewPrivs"] == "1"


def test_mount_is_refused_without_sys_admin(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = sh(cli, "mount -t tmpfs none /mnt")
    assert code != 0
    assert "permission denied" in err.lower()


@pytest.mark.parametrize(
    "script",
    [
        "echo 1 > /proc/sys/kernel/panic",  # read-only /proc/sys
        "echo x > /sys/kernel/uevent_helper",  # read-only /sys
        "mkdir /sys/fs/cgroup/memory",  # no cgroupfs (release_agent escape)
        "echo b > /proc/sysrq-trigger",  # not writable, if present at all
    ],
)
def test_kernel_interfaces_are_read_only(cli, script: str) -> None:  # type: ignore[no-untyped-def]
    code, _, _ = sh(cli, script)
    assert code != 0


def test_no_cgroup_filesystem_is_mounted(cli) -> None:  # type: ignore[no-untyped-def]
    _code, out, _ = sh(cli, "grep -c cgroup /proc/mounts; ls -A /sys/fs/cgroup | wc -l")
    assert out.split() == ["0", "0"]


def test_masked_proc_files_are_empty(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "for f in /proc/keys /proc/timer_list /proc/interrupts; do "
                           "[ -e $f ] && wc -c < $f; done; true")  # fmt: skip
    assert code == 0
    assert set(out.split()) <= {"0"}


def test_dev_has_only_the_six_nodes(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "find /dev -maxdepth 1 -type c -printf '%f\\n' | sort")
    assert code == 0
    assert out.split() == ["full", "null", "random", "tty", "urandom", "zero"]


def test_a_device_node_made_with_mknod_cannot_be_used(cli) -> None:  # type: ignore[no-untyped-def]
    # CAP_MKNOD is one of Docker's 14, so mknod works; the devices cgroup (or,
    # on cgroup v2, the nodev root) must stop the node from being opened.
    _code, out, err = sh(cli, "mknod /tmp/disk b 8 0 && mknod /tmp/mem c 1 1 && echo made; "
                             "head -c1 /tmp/disk; head -c1 /tmp/mem; true")  # fmt: skip
    assert "made" in out
    assert err.count("Operation not permitted") + err.count("Permission denied") == 2


def test_no_host_fd_or_working_directory_leaks_in(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, "echo $(ls /proc/1/fd | sort -n); readlink /proc/1/cwd; pwd",
                      "-w", "/tmp")  # fmt: skip
    assert code == 0
    fds, cwd1, cwd = out.splitlines()
    assert fds.split() == ["0", "1", "2"]
    assert cwd1 == "/tmp" and cwd == "/tmp"


def test_init_is_a_sealed_memfd_not_a_host_binary(cli) -> None:  # type: ignore[no-untyped-def]
    _code, out, _ = sh(cli, "readlink /proc/1/exe; echo x > /proc/1/exe; true")
    assert out.startswith("/memfd:tini")


def test_ipc_namespace_is_empty(cli) -> None:  # type: ignore[no-untyped-def]
    _code, out, _ = sh(cli, "ipcmk -Q >/dev/null; ipcs -q | grep -c 0x")
    assert out.strip() == "1"  # only the queue just made, none of the host's


def test_environment_and_workdir(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = sh(cli, 'echo "$GREETING $HOME"; pwd', "-e", "GREETING=hi", "-w", "/srv/app")
    assert code == 0
    assert out.splitlines() == ["hi /root", "/srv/app"]
