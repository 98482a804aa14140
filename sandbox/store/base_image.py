"""The embedded default image `base`: a small root filesystem built offline.

`populate_rootfs` fills an empty directory with this host's own shell tools
(the `TOOLS` table), the shared libraries they load, the dynamic loader, a few
terminfo entries, the C.UTF-8 locale and a small /etc. Nothing is downloaded:
the image is as current as the host's packages, and building it takes seconds.

Safety of the build, because it runs as root and copies from the host:

- Every write goes to a path under ``dest`` whose directories the builder made
  itself or found as real directories; a symlink met on the way is refused, and
  files are created with ``O_EXCL | O_NOFOLLOW``. So no symlink, not even one a
  host file's chain puts into the image, can redirect a write to the host.
- Symlinks in the image are always relative and computed from image paths,
  never copied as text: an absolute host link such as ``/lib64/ld-linux...`` →
  ``/lib/x86_64-linux-gnu/...`` becomes ``../lib/x86_64-linux-gnu/...``, so
  nothing that later reads the layer from outside can be led onto the host.
- Set-user-ID and set-group-ID bits and extended attributes (file
  capabilities) are not copied: a student inside a container never gains
  privileges from a binary of the base image, even if a runtime forgot
  no_new_privs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sandbox.errors import StoreError

# Where host commands are looked up, /usr first: on a merged-/usr host /bin is
# the same directory, and /usr/local holds nothing Debian vouches for.
HOST_PATH = "/usr/bin:/usr/sbin:/bin:/sbin"


@dataclass(frozen=True)
class Tool:
    """One command copied from the host into the base image.

    Attributes:
        name: the command name looked up on the host (and present in the image).
        package: the Debian package that provides it, for the error message and
            the image history.
        required: a missing required tool fails the build; a missing optional
            one is skipped.
        links: extra command names in the image that are symlinks to this tool
            (``awk`` → ``gawk``), whatever the host's alternatives point to.
        data: host files or directories the tool reads at run time, copied when
            the host has them (``/etc/iproute2`` for ``ip``'s table names).
    """

    name: str
    package: str
    required: bool = True
    links: tuple[str, ...] = ()
    data: tuple[str, ...] = ()


def _package(package: str, commands: str, *, required: bool = True) -> tuple[Tool, ...]:
    """Return the plain tools of one package, from a whitespace-separated list."""
    return tuple(Tool(name, package, required) for name in commands.split())


# The tools of the base image. To add a tool, add a line; an optional extra
# (`required=False`) never breaks the build on a host that lacks it, e.g.
#     *_package("file", "file", required=False),
TOOLS: tuple[Tool, ...] = (
    Tool("bash", "bash"),
    # /bin/sh: debianutils' `which` and gzip's `zcat` are /bin/sh scripts.
    Tool("dash", "dash", links=("sh",)),
    *_package(
        "coreutils",
        """
        [ arch b2sum base32 base64 basename basenc cat chgrp chmod chown chroot
        cksum comm cp csplit cut date dd df dircolors dirname du echo env expand
        expr factor false fmt fold groups head id install join link ln ls
        md5sum mkdir mkfifo mknod mktemp mv nice nl nohup nproc numfmt od paste
        pathchk pr printenv printf pwd readlink realpath rm rmdir seq sha1sum
        sha224sum sha256sum sha384sum sha512sum shred shuf sleep sort split stat
        stty sum sync tac tail tee test timeout touch tr true truncate tsort tty
        uname unexpand uniq unlink wc whoami yes
        """,
    ),
    *_package("findutils", "find xargs"),
    *_package("grep", "grep"),
    *_package("sed", "sed"),
    Tool("gawk", "gawk", links=("awk",)),
    *_package("procps", "ps top free pgrep pkill kill uptime watch vmstat pmap pwdx"),
    *_package(
        "util-linux",
        """
        lsns nsenter unshare setsid findmnt more flock getopt rev ipcs ipcmk
        ipcrm lscpu taskset chrt prlimit mountpoint namei
        """,
    ),
    *_package("bsdutils", "script renice"),
    *_package("mount", "mount umount"),
    *_package("login", "nologin"),  # the shell of `nobody` in /etc/passwd
    Tool("ip", "iproute2", data=("/etc/iproute2",)),
    *_package("tar", "tar"),
    *_package("gzip", "gzip gunzip zcat"),
    *_package("less", "less"),
    *_package("nano", "nano"),
    *_package("hostname", "hostname"),
    *_package("debianutils", "which"),
    *_package("ncurses-bin", "clear tput reset"),
    # The networking lesson. Debian's ping gets CAP_NET_RAW from a file
    # capability, which the image drops (see above); root in a container holds
    # CAP_NET_RAW anyway, so its ping opens a raw socket.
    *_package("iputils-ping", "ping"),
    # The OpenBSD netcat (it listens with `nc -l -p PORT`), looked up by its
    # own name: the host's `nc` alternative may be another netcat.
    Tool("nc.openbsd", "netcat-openbsd", links=("nc", "netcat")),
    # No CA certificates: containers have no route to the internet, only to
    # servers they run themselves, over plain http.
    *_package("curl", "curl"),
    # `getent hosts web`: how a name resolves (the container's /etc/hosts).
    *_package("libc-bin", "getent"),
    # Optional extras.
    Tool("ss", "iproute2", required=False, data=("/etc/iproute2",)),
    Tool("vim.tiny", "vim-tiny", required=False, links=("vi",)),
    *_package("bsdextrautils", "column hexdump", required=False),
    *_package("xxd", "xxd", required=False),
    *_package("wget", "wget", required=False),
)

# Terminfo entries, so that less, nano, top and clear work on a pty. The
# required ones come with ncurses-base, which every Debian system has.
TERMINFO_REQUIRED = ("xterm", "xterm-256color", "screen", "linux", "vt100", "dumb")
TERMINFO_OPTIONAL = ("xterm-color", "screen-256color", "tmux", "tmux-256color", "vt220", "ansi")
HOST_TERMINFO_DIRS = ("/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo")

# The C.UTF-8 locale (libc-bin), so LANG=C.UTF-8 works; skipped if absent.
HOST_LOCALE = "/usr/lib/locale/C.utf8"

# (path, mode, owner uid): the image's own directories.
DIRECTORIES: tuple[tuple[str, int, int], ...] = (
    ("proc", 0o555, 0),
    ("sys", 0o555, 0),
    ("dev", 0o755, 0),
    ("run", 0o755, 0),
    ("tmp", 0o1777, 0),
    ("var/tmp", 0o1777, 0),
    ("var/log", 0o755, 0),
    ("root", 0o700, 0),
    ("home/student", 0o755, 1000),
    ("mnt", 0o755, 0),
    ("opt", 0o755, 0),
    ("usr/local/bin", 0o755, 0),
)

_PASSWD = """\
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
student:x:1000:1000:Student:/home/student:/bin/bash
"""

# tty (gid 5) is the group devpts gives to pseudo-terminals (gid=5 mount option).
_GROUP = """\
root:x:0:
tty:x:5:
nogroup:x:65534:
student:x:1000:
"""

_NSSWITCH = """\
passwd:    files
group:     files
shadow:    files
hosts:     files dns
networks:  files
protocols: files
services:  files
"""

_PROFILE = """\
# /etc/profile: login shells of the jupyter-sandbox base image.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if [ -n "${PS1-}" ] && [ -n "${BASH-}" ] && [ "$BASH" != /bin/sh ] && [ -f /etc/bash.bashrc ]; then
    . /etc/bash.bashrc
fi
"""

_BASHRC = r"""# /etc/bash.bashrc: interactive bash shells of the jupyter-sandbox base image.
[ -z "${PS1-}" ] && return

# user@host:dir$ in colour: red for root, green for anyone else.
if [ "$EUID" -eq 0 ]; then _c='1;31'; else _c='1;32'; fi
PS1='\[\e['"$_c"'m\]\u@\h\[\e[0m\]:\[\e[1;34m\]\w\[\e[0m\]\$ '
unset _c

alias ls='ls --color=auto'
alias grep='grep --color=auto'
"""

# Debian's vim.tiny reads this when run as `vi`; Debian ships `set compatible`,
# which surprises students (arrow keys type letters in insert mode).
_VIMRC_TINY = """\
set nocompatible
set backspace=indent,eol,start
set showmode ruler
"""


@dataclass
class RootfsInfo:
    """What `populate_rootfs` built.

    Attributes:
        size_bytes: apparent size of the regular files, in bytes.
        files: number of entries that are not directories (files and symlinks).
        tools: the command names present in the image, sorted.
        packages: Debian package → version (``dpkg-query -W``) of the tools'
            packages; empty when the host has no dpkg.
    """

    size_bytes: int
    files: int
    tools: list[str]
    packages: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Return the one-line ``created_by`` of the image's history entry."""
        if not self.packages:
            return f"sandbox: base image from this host's shell tools ({len(self.tools)} commands)"
        versions = ", ".join(f"{pkg} {_upstream(v)}" for pkg, v in self.packages.items())
        return f"sandbox: base image from this host's {versions}"


def populate_rootfs(dest: Path) -> RootfsInfo:
    """Fill the empty directory ``dest`` with the base image's root filesystem.

    The host is checked first: a missing required tool raises before anything
    is written. Building is not atomic after that; on error ``dest`` is left
    partly filled, and the caller (the store builds into a temporary directory
    and renames it into place) removes it. Files are owned by the caller, and
    /home/student by uid 1000 only when building as root.

    Args:
        dest: an empty or not yet existing directory (its parent must exist).

    Returns:
        The size, file count, commands and package versions of the image.

    Raises:
        StoreError: a required tool or terminfo entry is missing on the host,
            a library cannot be resolved, or ``dest`` is not empty.
    """
    tools = list(TOOLS)
    found = _find_tools(tools)
    terminfo = _find_terminfo()

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise StoreError(
            f"cannot build the base image in {dest}: the directory is not empty; "
            "give an empty or new directory"
        )
    dest.mkdir(exist_ok=True)
    os.chmod(dest, 0o755)  # the container's /, whatever the umask
    image = _ImageWriter(dest)

    elves: list[Path] = []
    present: list[str] = []
    for tool in tools:
        host = found.get(tool.name)
        if host is None:
            continue
        real = Path(os.path.realpath(host))
        target = image.copy_in(real)
        if _is_elf(real):
            elves.append(real)
        command_dir = _image_path(_canonical(host)).parent
        for name in (tool.name, *tool.links):
            image.symlink_to(target, command_dir / name)
            present.append(name)
        for data in tool.data:
            if os.path.lexists(data):
                image.copy_tree(Path(data))

    for lib in _shared_libraries(elves):
        image.copy_in(lib)
    for entry in terminfo:
        image.copy_in(entry)
    if os.path.isdir(HOST_LOCALE):
        image.copy_tree(Path(HOST_LOCALE))

    _write_skeleton(image, vim="vim.tiny" in present)
    return RootfsInfo(
        *_measure(dest),
        tools=sorted(present),
        packages=_package_versions([t.package for t in tools if t.name in present]),
    )


def _find_tools(tools: list[Tool]) -> dict[str, str]:
    """Return name → host path of each tool; raise if a required one is missing."""
    found: dict[str, str] = {}
    missing: list[Tool] = []
    for tool in tools:
        path = shutil.which(tool.name, path=HOST_PATH)
        if path is not None:
            found[tool.name] = path
        elif tool.required:
            missing.append(tool)
    if missing:
        names = ", ".join(f"`{t.name}` (Debian package {t.package})" for t in missing)
        packages = " ".join(dict.fromkeys(t.package for t in missing))
        raise StoreError(
            f"cannot build the base image: this host lacks {names}; install "
            f"{'it' if len(missing) == 1 else 'them'} with `apt-get install {packages}`, "
            "or run the README's set-up command"
        )
    return found


def _find_terminfo() -> list[Path]:
    """Return the host's terminfo files for the image; raise if a required one is missing."""
    entries: list[Path] = []
    for name in TERMINFO_REQUIRED + TERMINFO_OPTIONAL:
        candidates = (Path(d, name[0], name) for d in HOST_TERMINFO_DIRS)
        path = next((p for p in candidates if p.exists()), None)
        if path is not None:
            entries.append(path)
        elif name in TERMINFO_REQUIRED:
            raise StoreError(
                f"cannot build the base image: this host lacks the terminfo entry {name}; "
                "install it with `apt-get install ncurses-base`, or run the README's "
                "set-up command"
            )
    return entries


def _shared_libraries(elves: list[Path]) -> list[Path]:
    """Return every shared library and the loader that ``elves`` load, as ldd resolves them.

    ldd asks the host's own dynamic loader, so the answer follows this host's
    search path and ld.so.cache exactly, transitive dependencies included.
    """
    if not elves:
        return []
    try:
        proc = subprocess.run(
            ["ldd", *map(str, elves)],
            capture_output=True,
            text=True,
            env={"LC_ALL": "C", "PATH": HOST_PATH},
            check=False,
        )
    except FileNotFoundError as exc:
        raise StoreError(
            "cannot build the base image: `ldd` is missing on this host; install it "
            "with `apt-get install libc-bin`"
        ) from exc
    libs: dict[str, None] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("\t"):
            continue  # "/usr/bin/ls:" headers
        line = line.strip()
        if "=> not found" in line:
            raise StoreError(
                f"cannot build the base image: the host's loader cannot find the shared "
                f"library {line.split()[0]}; reinstall the package that provides it"
            )
        path = line.split("=>")[-1].strip().split(" (")[0]
        if path.startswith("/"):
            libs[path] = None
    return [Path(p) for p in libs]


class _ImageWriter:
    """Writes files, symlinks and directories under one root, and nowhere else."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[PurePosixPath] = set()

    def place(self, rel: PurePosixPath) -> Path:
        """Return root/rel after making its parent directories (mode 0755).

        Raises:
            StoreError: a component on the way is a symlink or not a directory
                [should never happen: the builder writes only canonical paths].
        """
        if rel.is_absolute() or ".." in rel.parts:
            raise StoreError(f"refusing to write outside the image: {rel}")
        path = self.root
        for part in rel.parent.parts:
            path = path / part
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path)
                os.chmod(path, 0o755)  # not left to the umask
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise StoreError(f"refusing to write through {path}: not a real directory")
        return path / rel.name

    def copy_in(self, host: Path) -> PurePosixPath:
        """Copy a host file to the same place in the image, with its chain of symlinks.

        Returns:
            The image path of the regular file the chain ends at.
        """
        for _ in range(40):  # as the kernel's ELOOP limit
            src = _canonical(host)
            rel = _image_path(src)
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):
                host = _canonical(src.parent / os.readlink(src))
                self.symlink_to(_image_path(host), rel)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"cannot copy {src} into the base image: not a regular file")
            if rel not in self.written:
                self._copy_file(src, st, self.place(rel))
                self.written.add(rel)
            return rel
        raise StoreError(f"cannot copy {host} into the base image: too many levels of symlinks")

    def copy_tree(self, host: Path) -> None:
        """Copy a host file or directory tree (its files and symlinks) into the image."""
        if not os.path.isdir(host):
            self.copy_in(host)
            return
        for top, dirs, files in os.walk(host):
            for name in sorted(files + [d for d in dirs if os.path.islink(Path(top, d))]):
                self.copy_in(Path(top, name))

    def symlink_to(self, target: PurePosixPath, rel: PurePosixPath) -> None:
        """Make rel a relative symlink to the image path target (nothing if rel == target)."""
        if rel == target or rel in self.written:
            return
        os.symlink(os.path.relpath(f"/{target}", f"/{rel.parent}"), self.place(rel))
        self.written.add(rel)

    def write_text(self, rel: str, text: str, mode: int = 0o644) -> None:
        """Create a new file with this text and mode."""
        path = self.place(PurePosixPath(rel))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            os.fchmod(f.fileno(), mode)
        self.written.add(PurePosixPath(rel))

    def mkdir(self, rel: str, mode: int, uid: int = 0) -> None:
        """Make a directory with exactly this mode, owned by uid when running as root."""
        path = self.place(PurePosixPath(rel, "x")).parent  # makes rel and its parents
        os.chmod(path, mode, follow_symlinks=False)
        if os.geteuid() == 0:
            os.chown(path, uid, uid, follow_symlinks=False)

    @staticmethod
    def _copy_file(src: Path, st: os.stat_result, dst: Path) -> None:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(src, "rb") as fsrc, os.fdopen(fd, "wb") as fdst:
            shutil.copyfileobj(fsrc, fdst, 1 << 20)
            # Permissions preserved, minus setuid/setgid (see the module docstring).
            os.fchmod(fdst.fileno(), stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _write_skeleton(image: _ImageWriter, *, vim: bool) -> None:
    """Write the merged-/usr links, the image's directories and its small /etc."""
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if top in ("bin", "sbin", "lib") or (image.root / "usr" / top).is_dir():
            image.mkdir(f"usr/{top}", 0o755)
            image.symlink_to(PurePosixPath("usr", top), PurePosixPath(top))
    for rel, mode, uid in DIRECTORIES:
        image.mkdir(rel, mode, uid)

    image.write_text("etc/passwd", _PASSWD)
    image.write_text("etc/group", _GROUP)
    image.write_text("etc/nsswitch.conf", _NSSWITCH)
    image.write_text("etc/profile", _PROFILE)
    image.write_text("etc/bash.bashrc", _BASHRC)
    image.write_text("etc/os-release", _os_release())
    if vim:
        image.write_text("etc/vim/vimrc.tiny", _VIMRC_TINY)
    # Mount points: the runtime binds each container's own files onto these.
    for name in ("hostname", "hosts", "resolv.conf"):
        image.write_text(f"etc/{name}", "")
    image.symlink_to(PurePosixPath("proc/self/mounts"), PurePosixPath("etc/mtab"))


def _os_release() -> str:
    """Return /etc/os-release naming the sandbox, and the host distribution it comes from."""
    origin = "this host"
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                origin = line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return (
        f'PRETTY_NAME="jupyter-sandbox base (shell tools from {origin})"\n'
        'NAME="jupyter-sandbox base"\n'
        "ID=jupyter-sandbox\n"
        "ID_LIKE=debian\n"
    )


def _package_versions(packages: list[str]) -> dict[str, str]:
    """Return package → version for the installed ones, in the order given."""
    wanted = list(dict.fromkeys(packages))
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *wanted],
            capture_output=True,
            text=True,
            check=False,  # exits 1 if any package is unknown, still lists the others
        )
    except FileNotFoundError:
        return {}
    versions = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
    return {pkg: versions[pkg] for pkg in wanted if versions.get(pkg)}


def _measure(root: Path) -> tuple[int, int]:
    """Return (apparent size of regular files, number of non-directory entries)."""
    size = files = 0
    for top, dirs, names in os.walk(root):
        for name in names + [d for d in dirs if os.path.islink(Path(top, d))]:
            st = os.lstat(Path(top, name))
            files += 1
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, files


def _canonical(path: Path | str) -> Path:
    """Return path with its directory resolved on the host, its last component kept.

    The last component may be a symlink the image must reproduce; the
    directories may not (a merged-/usr host's /lib is /usr/lib).
    """
    path = Path(path)
    return Path(os.path.realpath(path.parent)) / path.name


def _image_path(host: Path) -> PurePosixPath:
    """Return where a canonical host path lives in the (merged-/usr) image."""
    parts = host.parts[1:]
    if parts and parts[0] in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        parts = ("usr", *parts)
    return PurePosixPath(*parts)


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _upstream(version: str) -> str:
    """Return the upstream part of a Debian version: 1:5.2.1-2 → 5.2.1."""
    version = version.partition(":")[2] or version
    return version.rsplit("-", 1)[0]


__all__ = ["TOOLS", "RootfsInfo", "Tool", "populate_rootfs"]
