"""Immutable layer directories: the overlay lowerdirs.

A layer is ``<root>/layers/<id>/`` (its files, in overlayfs' own form:
whiteouts are 0/0 character devices, opaque directories carry the
``trusted.overlay.opaque`` xattr) plus ``<root>/layers/<id>.json`` (size,
file count, what made it). IDs are 12 hex digits, so a lowerdir option for a
stack of 300 layers still fits in one page.

A layer exists once its ``.json`` does: the directory is renamed into place
first, the metadata second, both under the store lock, so a crash in between
leaves a directory without metadata, which the reconciler removes (under the
same lock, so never one that a live process is adding). Nothing ever writes
into a layer's directory after that. A removed layer is renamed to
``.rm-<pid>-<id>`` before it is deleted, so a crash midway leaves no
half-deleted layer, only a leftover the reconciler removes.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox.errors import LayerNotFound, StoreError
from sandbox.store import atomic
from sandbox.store.locks import locked


@dataclass
class Layer:
    """One layer's metadata.

    Attributes:
        id: 12 hex digits, also the directory name.
        created: Unix time of the commit.
        size: bytes of file content (whiteouts count 0).
        files: number of non-directory entries (whiteouts included).
        created_by: the command that made it.
        diff_id: ``sha256:...`` of its tar form, once computed (export, push).
    """

    id: str
    created: float
    size: int
    files: int
    created_by: str = ""
    diff_id: str = ""


class LayerStore:
    """The layers under ``<root>/layers``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "layers"
        self.lock_path = root / "store.lock"

    def path(self, layer_id: str) -> Path:
        """The directory holding the layer's files."""
        return self.dir / layer_id

    def _meta(self, layer_id: str) -> Path:
        return self.dir / f"{layer_id}.json"

    def new_id(self) -> str:
        """A fresh layer ID not used by any layer or leftover directory."""
        while True:
            layer_id = os.urandom(6).hex()
            if not os.path.lexists(self.path(layer_id)):
                return layer_id

    def add(
        self, source: Path, *, created_by: str, size: int, files: int, layer_id: str | None = None
    ) -> Layer:
        """Make ``source`` a layer by renaming it into the store (same filesystem).

        ``source`` is gone afterwards. The rename and the metadata are written
        under the store lock; if the process dies between them, the directory
        is an orphan the reconciler removes (or, for a commit, adopts).

        Args:
            layer_id: the ID to use (a commit records it before the rename);
                None makes a fresh one.
        """
        with locked(self.lock_path):
            layer = Layer(layer_id or self.new_id(), time.time(), size, files, created_by)
            try:
                os.rename(source, self.path(layer.id))
            except OSError as exc:
                raise StoreError(f"cannot add layer from {source}: {exc.strerror}") from exc
            atomic.write_json(self._meta(layer.id), asdict(layer))
        return layer

    def get(self, layer_id: str) -> Layer:
        """The layer's metadata.

        Raises:
            LayerNotFound: no such layer (the store is damaged if an image
                refers to it).
        """
        try:
            return Layer(**atomic.read_json(self._meta(layer_id)))
        except FileNotFoundError:
            raise LayerNotFound(
                f"layer {layer_id} is missing from the store at {self.dir}"
            ) from None

    def exists(self, layer_id: str) -> bool:
        return self._meta(layer_id).exists()

    def update(self, layer: Layer) -> None:
        """Rewrite a layer's metadata (e.g. once its diff_id is known)."""
        atomic.write_json(self._meta(layer.id), asdict(layer))

    def remove(self, layer_id: str) -> None:
        """Delete a layer: metadata first, so a crash leaves only an orphan dir."""
        self._meta(layer_id).unlink(missing_ok=True)
        trash = self.dir / f".rm-{os.getpid()}-{layer_id}"
        try:
            os.rename(self.path(layer_id), trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def ids(self) -> list[str]:
        """Every committed layer."""
        if not self.dir.exists():
            return []
        return [p.name[:-5] for p in self.dir.iterdir() if p.name.endswith(".json")]

    def orphans(self) -> list[Path]:
        """Directories without metadata: leftovers of a crash mid-commit."""
        if not self.dir.exists():
            return []
        return [
            p
            for p in self.dir.iterdir()
            if p.is_dir() and not p.name.startswith(".") and not self._meta(p.name).exists()
        ]
