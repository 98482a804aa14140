"""Containers on disk: state, upper and work directories, log.

``<root>/containers/<id>/`` holds ``state.json`` (the record below),
``upper/`` and ``work/`` (overlayfs' writable layer and work dir),
``merged/`` (the mount point, only ever mounted inside the container's own
mount namespace), ``log.jsonl`` (Docker's json-file format), and the files
bound over /etc/hostname and /etc/hosts. ``state.json`` is replaced atomically
on every change; the directory is created under a temporary name and renamed,
so a half-made container never appears.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.errors import Conflict, ContainerNotFound, InvalidArgument
from sandbox.store import atomic
from sandbox.store.locks import locked

CREATED, RUNNING, EXITED = "created", "running", "exited"
# ``<root>/containers/.commit-<pid>-<id>``: a commit in progress (see Engine.commit).
COMMIT_MARKER = ".commit-"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass
class ContainerRecord:
    """Everything the store knows of one container."""

    id: str
    name: str
    image_id: str
    image: str
    layers: list[str]
    cmd: list[str]
    env: list[str]
    workdir: str = "/"
    hostname: str = ""
    tty: bool = False
    open_stdin: bool = False
    limits: dict[str, Any] = field(default_factory=dict)
    auto_remove: bool = False
    owner: int = 0
    # Docker's labels; ``sandbox.foreground=1`` marks a container whose
    # `sandbox run` client must be there while it runs (see routes/containers.py).
    labels: dict[str, str] = field(default_factory=dict)
    state: str = CREATED
    pid: int = 0
    pid_start: int = 0
    monitor_pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    pids_limit_hit: bool = False
    error: str = ""
    created: float = field(default_factory=time.time)
    started_at: float = 0.0
    finished_at: float = 0.0
    committed_layers: list[str] = field(default_factory=list)
    # The history entries of the commits so far, one per commit (those that
    # made no layer have empty_layer): the next commit's image carries them all.
    committed_history: list[dict[str, Any]] = field(default_factory=list)
    # The networks it joins when started: {name: {"Aliases": [...], "IPv4Address": ""}};
    # empty: loopback only (``--network none``).
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Published ports, Docker's PortBindings: {"80/tcp": [{"HostIp", "HostPort"}]}.
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # While it runs: each network's endpoint (address, MAC, gateway, ...) and
    # the host ports actually listening; emptied when it exits.
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == RUNNING


def check_name(name: str) -> str:
    """Check a container name (Docker's rule: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``)."""
    if not name or not name[0].isalnum() or not set(name) <= _NAME_CHARS or len(name) > 128:
        raise InvalidArgument(
            f"invalid container name {name!r}: use letters, digits, _ . or -, "
            "starting with a letter or digit"
        )
    return name


class ContainerStore:
    """The containers under ``<root>/containers``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "containers"
        self.names = root / "names"
        self.lock_path = root / "store.lock"

    def _claim_name(self, name: str, cid: str) -> None:
        """Take ``name`` for ``cid``: a symlink is created atomically or not at all."""
        self.names.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(cid, self.names / name)
        except FileExistsError:
            owner = os.readlink(self.names / name)
            # Another process may be between claiming the name and renaming
            # its staging dir into place: look at the staging dir first.
            if any(self.dir.glob(f".new-*-{owner}")) or (self.path(owner) / "state.json").exists():
                raise Conflict(
                    f'the container name "{name}" is already in use by container '
                    f"{owner[:12]}; remove that container (`sandbox rm {name}`) or "
                    "choose another name"
                ) from None
            # A leftover of a crash: the container is gone, the name is free.
            os.unlink(self.names / name)
            os.symlink(cid, self.names / name)

    def path(self, cid: str) -> Path:
        return self.dir / cid

    def create(self, record: ContainerRecord) -> ContainerRecord:
        """Create the container's directory and state, atomically.

        Raises:
            Conflict: the name is taken.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        staging = self.dir / f".new-{os.getpid()}-{record.id}"
        for sub in ("upper", "work", "merged"):
            (staging / sub).mkdir(parents=True)
        atomic.write_json(staging / "state.json", asdict(record))
        try:
            self._claim_name(record.name, record.id)
        except BaseException:
            shutil.rmtree(staging)
            raise
        os.rename(staging, self.path(record.id))
        return record

    def save(self, record: ContainerRecord) -> None:
        """Write the record's state (atomic replace)."""
        atomic.write_json(self.path(record.id) / "state.json", asdict(record))

    def load(self, cid: str) -> ContainerRecord:
        try:
            return ContainerRecord(**atomic.read_json(self.path(cid) / "state.json"))
        except FileNotFoundError:
            raise ContainerNotFound(cid) from None

    def list(self) -> list[ContainerRecord]:
        """Every container, newest first."""
        if not self.dir.exists():
            return []
        records = []
        for entry in os.scandir(self.dir):
            if entry.name.startswith("."):
                continue
            try:
                records.append(self.load(entry.name))
            except (ContainerNotFound, ValueError, TypeError):
                continue  # removed meanwhile, or a damaged record the reconciler handles
        return sorted(records, key=lambda r: r.created, reverse=True)

    def find(self, ref: str) -> ContainerRecord:
        """By full ID, name, or unique ID prefix.

        Raises:
            ContainerNotFound: nothing matches, or the prefix is ambiguous.
        """
        ref = ref.strip().lstrip("/")
        if ref and (self.path(ref) / "state.json").exists():
            return self.load(ref)
        try:
            return self.load(os.readlink(self.names / ref))
        except (OSError, ContainerNotFound):
            pass
        records = self.list()
        matches = [r for r in records if ref and r.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise ContainerNotFound(ref)

    def delete(self, record: ContainerRecord) -> None:
        """Remove the container's directory (upper layer, log and all) and its name.

        The directory is renamed away first (it disappears from listings at
        once, and a crash leaves a ``.rm-*`` leftover, never a container
        without its name); under the store lock, so never during a commit.
        """
        cid = record.id
        path = self.path(cid)
        with locked(self.lock_path):
            if path.exists():
                trash = self.dir / f".rm-{os.getpid()}-{cid}"
                os.rename(path, trash)
            else:
                trash = None
            try:
                if os.readlink(self.names / record.name) == cid:
                    os.unlink(self.names / record.name)
            except OSError:
                pass
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def dangling_names(self) -> list[Path]:
        """Names whose container is gone (a crash between claiming and creating)."""
        if not self.names.exists() or not self.dir.exists():
            return []
        present = set(os.listdir(self.dir))  # one listing, not one per name
        found = []
        for entry in os.scandir(self.names):
            try:
                cid = os.readlink(entry.path)
            except OSError:
                continue
            if cid in present:
                continue
            # Looked at again one by one, staging first: a live create renames
            # its staging dir into place after the claim (maybe since the listing).
            if not any(self.dir.glob(f".new-*-{cid}")) and not self.path(cid).exists():
                found.append(Path(entry.path))
        return found

    def leftovers(self) -> list[Path]:
        """Half-made or half-removed directories (``.new-*``, ``.rm-*``)."""
        if not self.dir.exists():
            return []
        return [p for p in self.dir.iterdir() if p.name.startswith((".new-", ".rm-"))]
