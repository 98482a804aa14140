"""The embedded default image: built from this host's tools, run with chroot.

These tests build the real image once into a temporary directory (removed
afterwards, even on failure) and run its tools inside it as root. The
networking tools are run in real containers through the CLI instead, on the
session store's own build of the same image: ping needs the capabilities and
the loopback-only network namespace a container has. The only fake is a tool
table that names a command no host has, to see the missing-tool error.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import stat
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.errors import StoreError
from sandbox.store import base_image
from sandbox.store.base_image import TOOLS, RootfsInfo, Tool, populate_rootfs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespaces need root"),
]

# The environment a container's shell gets: nothing leaks in from the host.
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "TERM": "xterm-256color",
}


@dataclass
class Built:
    root: Path
    info: RootfsInfo
    seconds: float


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    root = Path(tempfile.mkdtemp(prefix="sandbox-base-test-"))
    try:
        start = time.monotonic()
        info = populate_rootfs(root / "rootfs")
        yield Built(root / "rootfs", info, time.monotonic() - start)
    finally:
        shutil.rmtree(root)


@pytest.fixture
def empty_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sandbox-base-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def chroot(root: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a bash script inside the image (no /proc, no namespaces)."""
    return subprocess.run(
        ["chroot", str(root), "/bin/bash", "-c", script],
        capture_output=True,
        text=True,
        env={**ENV, **env},
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


def in_namespaces(root: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run argv inside the image in new PID, mount and network namespaces, with /proc.

    The proc mount lives only in the new mount namespace (private propagation),
    so it disappears with the process and never shows on the host.
    """
    return subprocess.run(
        [
            *("unshare", "--pid", "--fork", "--mount", "--net", f"--mount-proc={root}/proc"),
            *("chroot", str(root), *argv),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def namespaces(built: Built) -> Path:
    probe = in_namespaces(built.root, ["/bin/true"])
    if probe.returncode != 0:
        pytest.skip(f"cannot make PID/mount/net namespaces here: {probe.stderr.strip()}")
    return built.root


def test_size_and_build_time(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    biggest = sorted(
        (p for p in built.root.rglob("*") if p.is_file() and not p.is_symlink()),
        key=lambda p: p.stat().st_size,
        reverse=True,
    )[:8]
    with capsys.disabled():
        print(
            f"\nbase image: {built.info.size_bytes / 1e6:.1f} MB in {built.info.files} files, "
            f"{len(built.info.tools)} commands, built in {built.seconds:.2f} s; biggest: "
            + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in biggest)
        )
        print(built.info.describe())
    assert built.info.size_bytes > 0
    assert built.info.files > 0


def test_describe_names_the_host_packages(built: Built) -> None:
    if not shutil.which("dpkg-query"):
        pytest.skip("no dpkg on this host")
    assert built.info.describe().startswith("sandbox: base image from this host's bash ")
    assert "coreutils" in built.info.packages


# --- every tool runs --------------------------------------------------------

# How to run a tool harmlessly when `--version` does not work: (args, exit status).
RUN_ARGS: dict[str, tuple[list[str], int]] = {
    "false": (["--version"], 1),
    "nologin": ([], 1),
    "which": (["which"], 0),
    "sh": (["-c", "true"], 0),
    "dash": (["-c", "true"], 0),
    "clear": (["-V"], 0),
    "tput": (["-V"], 0),
    "reset": (["-V"], 0),
    "ip": (["-V"], 0),
    "ss": (["-V"], 0),
    "ping": (["-V"], 0),
    "nc.openbsd": (["-h"], 0),
    "nc": (["-h"], 0),
    "netcat": (["-h"], 0),
}

ALL_COMMANDS = [name for tool in TOOLS for name in (tool.name, *tool.links)]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_tool_runs_in_the_image(namespaces: Path, built: Built, command: str) -> None:
    if command not in built.info.tools:
        optional = all(not t.required for t in TOOLS if command in (t.name, *t.links))
        assert optional, f"required command {command} missing from the image"
        pytest.skip(f"optional {command} is not installed on this host")
    args, status = RUN_ARGS.get(command, (["--version"], 0))
    # env(1) runs the file, never a bash builtin of the same name (kill, echo, [).
    result = in_namespaces(namespaces, ["/usr/bin/env", command, *args])
    assert result.returncode == status, result.stderr
    assert "error while loading shared libraries" not in result.stderr


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("ls /", "usr"),
        ("echo hi | grep hi", "hi"),
        ("printf 'a b' | awk '{print $2}'", "b"),
        ("echo hello | sed s/hello/bye/", "bye"),
        ("which ls", "/usr/bin/ls"),
        ("command -v sh && readlink /bin/sh", "dash"),
        ("tar --version", "GNU tar"),
        ("echo zipped | gzip | zcat", "zipped"),
        ("gzip -V", "gzip"),
        ("less --version", "less"),
        ("nano --version", "GNU nano"),
        ("hostname --version 2>&1", "hostname"),
        ("find /etc -name passwd", "/etc/passwd"),
        ("ls -l /home", "student student"),
        ("id student", "uid=1000(student)"),
        ("tput -T xterm-256color colors", "256"),
        ("cat /etc/os-release", "jupyter-sandbox"),
        ("env LANG=C.UTF-8 bash -c 'printf \"%s\\n\" é'", "é"),
    ],
)
def test_shell_lesson_commands(built: Built, script: str, expected: str) -> None:
    result = chroot(built.root, script)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_utf8_locale(built: Built) -> None:
    if not os.path.isdir(base_image.HOST_LOCALE):
        pytest.skip("this host has no C.UTF-8 locale")
    # Two bytes, one character: only true when the locale loaded.
    result = chroot(built.root, "x=é; echo ${#x}", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    assert (result.stdout, result.stderr) == ("1\n", "")


@pytest.mark.parametrize("term", base_image.TERMINFO_REQUIRED)
def test_terminfo_entry(built: Built, term: str) -> None:
    result = chroot(built.root, f"tput -T {term} longname")
    assert result.returncode == 0, result.stderr


def test_ps_top_free_in_a_pid_namespace(namespaces: Path) -> None:
    result = in_namespaces(
        namespaces, ["/bin/bash", "-c", "ps -e -o pid=,comm=; top -b -n 1 | head -3; free -m"]
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["1", "bash"]  # the shell is PID 1 of its namespace
    assert "load average" in result.stdout
    assert "Mem:" in result.stdout


@pytest.mark.netns
def test_ip_addr_in_a_network_namespace(namespaces: Path) -> None:
    result = in_namespaces(namespaces, ["/bin/bash", "-c", "ip addr"])
    assert result.returncode == 0, result.stderr
    assert "1: lo:" in result.stdout


# --- the networking lesson, in a container ----------------------------------

Cli = Callable[..., subprocess.CompletedProcess[bytes]]

# The client retries until the server listens, instead of guessing a sleep;
# `timeout` bounds a server that never gets its connection.
NET_LESSON = [
    ("ping -c1 -W1 127.0.0.1", "1 packets transmitted, 1 received"),
    (
        "timeout 10 netcat -l -p 8000 > /tmp/got &"
        " for _ in $(seq 100); do echo hi | nc -q0 127.0.0.1 8000 && break; sleep 0.05; done;"
        " wait; cat /tmp/got",
        "hi",
    ),
    (
        "printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nhello\\n'"
        " | timeout 10 nc -q1 -l -p 8000 > /dev/null &"
        " for _ in $(seq 100); do curl -sS http://127.0.0.1:8000/ && break; sleep 0.05; done",
        "hello",
    ),
]


@pytest.mark.netns
@pytest.mark.parametrize(("script", "expected"), NET_LESSON, ids=["ping", "nc", "curl"])
def test_networking_lesson_in_a_container(cli: Cli, script: str, expected: str) -> None:
    result = cli("run", "--rm", "base", "bash", "-c", script)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert expected in out, f"stdout: {out!r}, stderr: {err!r}"


@pytest.mark.parametrize(
    ("argv", "prompt", "keys"),
    [
        (["nano", "/etc/passwd"], b"GNU nano", b"\x18"),  # ^X quits, nothing changed
        (["less", "/etc/passwd"], b"root:x:0:0", b"q"),
        (["vi", "/etc/passwd"], b"root:x:0:0", b"\x1b:q\r"),
    ],
)
def test_full_screen_program_on_a_pty(
    built: Built, argv: list[str], prompt: bytes, keys: bytes
) -> None:
    if argv[0] not in built.info.tools:
        pytest.skip(f"optional {argv[0]} is not installed on this host")
    status, screen = run_on_pty(
        ["chroot", str(built.root), "/usr/bin/env", *argv], prompt, keys, LANG="C.UTF-8"
    )
    assert prompt in screen, screen[-500:]
    assert status == 0, screen[-500:]


def run_on_pty(argv: list[str], prompt: bytes, keys: bytes, **env: str) -> tuple[int, bytes]:
    """Run argv on a new 80x24 pty, type keys once prompt shows; return (status, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**ENV, **env},
            start_new_session=True,
        )
    finally:
        os.close(slave)
    screen = b""
    typed = False
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # EIO: the program closed the pty
                    break
            if not typed and prompt in screen:
                time.sleep(0.2)  # let it finish drawing before it reads keys
                os.write(master, keys)
                typed = True
        return proc.wait(timeout=10), screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


# --- the tree itself --------------------------------------------------------


def test_every_elf_finds_its_libraries_in_the_tree(built: Built) -> None:
    root = built.root
    lib_dirs = [root / "usr/lib", root / "usr/lib64"]
    lib_dirs += [d for d in (root / "usr/lib").iterdir() if d.name.endswith("-linux-gnu")]
    problems = []
    elves = 0
    for path in files_of(root):
        if path.is_symlink() or path.read_bytes()[:4] != b"\x7fELF":
            continue
        elves += 1
        interp, needed = elf_interp_and_needed(path.read_bytes())
        if interp is not None and not inside(root, root / interp.lstrip("/"), exists=True):
            problems.append(f"{path}: loader {interp} missing")
        for soname in needed:
            if not any(inside(root, d / soname, exists=True) for d in lib_dirs):
                problems.append(f"{path}: {soname} missing")
    assert elves > 50
    assert problems == []


def test_symlinks_are_relative_and_stay_inside(built: Built) -> None:
    links = [p for p in files_of(built.root) if p.is_symlink()]
    assert links
    for link in links:
        target = os.readlink(link)
        assert not target.startswith("/"), f"{link} -> {target} is absolute"
        assert inside(built.root, link, exists=False), f"{link} -> {target} leaves the tree"


def test_layout_modes_and_owners(built: Built) -> None:
    root = built.root
    for top in ("bin", "sbin", "lib"):
        assert os.readlink(root / top) == f"usr/{top}"
    assert stat.S_IMODE((root / "tmp").lstat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "var/tmp").lstat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "root").lstat().st_mode) == 0o700
    assert (root / "home/student").lstat().st_uid == 1000
    for mount_point in ("proc", "sys", "dev", "run"):
        assert (root / mount_point).is_dir()
    for bind_target in ("hostname", "hosts", "resolv.conf"):
        path = root / "etc" / bind_target
        assert path.is_file() and not path.is_symlink() and path.stat().st_size == 0
    assert "tty:x:5:" in (root / "etc/group").read_text()
    assert not list(root.glob("usr/share/doc*")) and not list(root.glob("usr/share/man*"))


def test_no_setuid_files(built: Built) -> None:
    for path in files_of(built.root):
        mode = path.lstat().st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID), path


# --- errors -----------------------------------------------------------------


def test_a_missing_required_tool_names_its_package(
    monkeypatch: pytest.MonkeyPatch, empty_dir: Path
) -> None:
    # A legitimate fake: no host has this command.
    fake = Tool("sandbox-no-such-tool", "sandbox-no-such-package")
    monkeypatch.setattr(base_image, "TOOLS", (*TOOLS, fake))
    with pytest.raises(StoreError) as caught:
        populate_rootfs(empty_dir / "rootfs")
    message = str(caught.value)
    assert "sandbox-no-such-tool" in message
    assert "apt-get install sandbox-no-such-package" in message
    assert not (empty_dir / "rootfs").exists()  # checked before anything is written


def test_a_missing_optional_tool_is_skipped(
    monkeypatch: pytest.MonkeyPatch, empty_dir: Path
) -> None:
    fake = Tool("sandbox-no-such-extra", "sandbox-no-such-package", required=False)
    monkeypatch.setattr(base_image, "TOOLS", (Tool("bash", "bash"), fake))
    info = populate_rootfs(empty_dir / "rootfs")
    assert info.tools == ["bash"]
    assert chroot(empty_dir / "rootfs", "echo $BASH").stdout == "/bin/bash\n"


def test_refuses_a_non_empty_directory(empty_dir: Path) -> None:
    (empty_dir / "left-over").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        populate_rootfs(empty_dir)


# --- helpers ----------------------------------------------------------------


def files_of(root: Path) -> Iterator[Path]:
    """Yield every non-directory entry under root, without following symlinks."""
    for top, dirs, names in os.walk(root):
        for name in names:
            yield Path(top, name)
        for name in dirs:
            if os.path.islink(Path(top, name)):
                yield Path(top, name)


def inside(root: Path, path: Path, *, exists: bool) -> bool:
    """Whether path, its symlinks resolved, stays under root (and exists, if asked).

    Valid because the image has no absolute symlinks (tested above), so the
    host's realpath resolves them exactly as the container would.
    """
    real = Path(os.path.realpath(path))
    return real.is_relative_to(os.path.realpath(root)) and (not exists or real.exists())


def elf_interp_and_needed(data: bytes) -> tuple[str | None, list[str]]:
    """Return an ELF file's PT_INTERP and DT_NEEDED names, read from its headers."""
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    word = "Q" if is64 else "I"
    if is64:
        phoff, shoff = struct.unpack_from(end + "QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 0x36)
    else:
        phoff, shoff = struct.unpack_from(end + "II", data, 0x1C)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 0x2A)

    interp = None
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type = struct.unpack_from(end + "I", data, at)[0]
        if p_type == 3:  # PT_INTERP
            fields = end + ("IIQQQQ" if is64 else "IIIIII")
            _, *rest = struct.unpack_from(fields, data, at)
            offset, size = (rest[1], rest[4]) if is64 else (rest[0], rest[3])
            interp = data[offset : offset + size].rstrip(b"\0").decode()

    sections = [
        struct.unpack_from(end + f"II{word}{word}{word}{word}I", data, shoff + i * shentsize)
        for i in range(shnum)
    ]
    needed = []
    for _name, sh_type, _flags, _addr, offset, size, link in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        entry = struct.Struct(end + ("qQ" if is64 else "iI"))
        for at in range(offset, offset + size, entry.size):
            tag, value = entry.unpack_from(data, at)
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                start = strtab + value
                needed.append(data[start : data.index(b"\0", start)].decode())
    return interp, needed
