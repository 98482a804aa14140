"""Images: an OCI image config plus the list of the store's layers, and tags.

``<root>/images/<id>.json`` holds ``{"layers": [...], "config": {...},
"owner": uid}``; the image ID is the sha256 of that file's first content, as
Docker's is of the config. ``config`` is an OCI image config
(architecture, os, created, config{Env,Cmd,WorkingDir}, rootfs, history with
created_by and empty_layer). Its ``rootfs.diff_ids`` are computed only when an
image leaves the store (export, push): the store refers to layers by ID.

``<root>/refs.json`` maps ``name:tag`` to image IDs. Every write replaces a
whole file atomically under the store lock.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.errors import Conflict, ImageNotFound, InvalidArgument
from sandbox.store import atomic, references
from sandbox.store.locks import locked

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def rfc3339(ts: float | None = None) -> str:
    """A UTC timestamp as Docker writes them (``2024-01-02T03:04:05.123456789Z``)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def new_config(
    *, env: list[str], cmd: list[str], workdir: str = "/", history: list[dict[str, Any]]
) -> dict[str, Any]:
    """A fresh OCI image config."""
    return {
        "architecture": _ARCH,
        "os": "linux",
        "created": rfc3339(),
        "config": {"Env": env, "Cmd": cmd, "WorkingDir": workdir, "Labels": {}},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": history,
    }


@dataclass
class Image:
    """An image: its ID, layers (bottom first), OCI config, owner and tags."""

    id: str
    layers: list[str]
    config: dict[str, Any]
    owner: int = 0
    tags: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.config.get("history", [])

    @property
    def created(self) -> str:
        return self.config.get("created", "")

    def record(self) -> dict[str, Any]:
        return {"layers": self.layers, "config": self.config, "owner": self.owner}


class ImageStore:
    """Images and tags under ``<root>/images`` and ``<root>/refs.json``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "images"
        self.refs_path = root / "refs.json"
        self.lock_path = root / "store.lock"

    # -- reading ---------------------------------------------------------------

    def refs(self) -> dict[str, str]:
        """``name:tag`` -> image ID."""
        try:
            return atomic.read_json(self.refs_path)
        except FileNotFoundError:
            return {}

    def load(self, image_id: str, refs: dict[str, str] | None = None) -> Image:
        try:
            data = atomic.read_json(self.dir / f"{image_id}.json")
        except FileNotFoundError:
            raise ImageNotFound(image_id) from None
        refs = self.refs() if refs is None else refs
        tags = sorted(ref for ref, target in refs.items() if target == image_id)
        return Image(image_id, data["layers"], data["config"], data.get("owner", 0), tags)

    def ids(self) -> list[str]:
        if not self.dir.exists():
            return []
        return [p.name[:-5] for p in self.dir.glob("*.json")]

    def list(self) -> list[Image]:
        """Every image, newest first."""
        refs = self.refs()
        images = []
        for image_id in self.ids():
            try:
                images.append(self.load(image_id, refs))
            except ImageNotFound:
                continue  # deleted meanwhile by another process
        return sorted(images, key=lambda im: im.created, reverse=True)

    def resolve(self, ref: str) -> Image:
        """Find an image by ``name[:tag]``, full ID, ``sha256:`` ID or unique ID prefix.

        Raises:
            ImageNotFound: nothing matches (or the prefix is ambiguous).
        """
        text = ref.strip()
        refs = self.refs()
        bare = text.removeprefix("sha256:")
        if len(bare) == 64 and (self.dir / f"{bare}.json").exists():
            return self.load(bare, refs)
        try:
            parsed = str(references.parse(text))
        except InvalidArgument:
            parsed = ""
        if parsed and parsed in refs:
            return self.load(refs[parsed], refs)
        if len(bare) >= 4 and all(c in "0123456789abcdef" for c in bare):
            matches = [i for i in self.ids() if i.startswith(bare)]
            if len(matches) == 1:
                return self.load(matches[0], refs)
        raise ImageNotFound(text)

    # -- writing ---------------------------------------------------------------

    def add(self, layers: list[str], config: dict[str, Any], *, owner: int = 0,
            tag: str | None = None) -> Image:  # fmt: skip
        """Store a new image (and tag it); returns it with its ID."""
        record = {"layers": layers, "config": config, "owner": owner}
        raw = json.dumps(record, sort_keys=True).encode()
        image_id = hashlib.sha256(raw).hexdigest()
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(self.dir / f"{image_id}.json", raw)
        if tag:
            self.tag(image_id, tag)
        return self.load(image_id)

    def tag(self, image_id: str, ref: str) -> str:
        """Point ``ref`` at the image (moving it from another image if needed)."""
        name = str(references.parse(ref))
        with locked(self.lock_path):
            if not (self.dir / f"{image_id}.json").exists():  # removed meanwhile
                raise ImageNotFound(image_id)
            refs = self.refs()
            refs[name] = image_id
            atomic.write_json(self.refs_path, refs)
        return name

    def untag(self, ref: str) -> str:
        """Remove one tag; returns the image ID it pointed to."""
        name = str(references.parse(ref))
        with locked(self.lock_path):
            refs = self.refs()
            if name not in refs:
                raise ImageNotFound(ref)
            image_id = refs.pop(name)
            atomic.write_json(self.refs_path, refs)
        return image_id

    def delete(self, image_id: str) -> None:
        """Delete an untagged image's record (its layers are collected separately)."""
        with locked(self.lock_path):
            if any(target == image_id for target in self.refs().values()):
                raise Conflict(f"image {image_id[:12]} is still tagged")
            (self.dir / f"{image_id}.json").unlink(missing_ok=True)
