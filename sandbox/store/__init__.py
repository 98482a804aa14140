"""The on-disk store: layers, images, containers, under one root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sandbox.store.containers import ContainerRecord, ContainerStore
from sandbox.store.images import Image, ImageStore
from sandbox.store.layers import Layer, LayerStore


class Store:
    """One store root (``SANDBOX_ROOT``) and its parts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("layers", "images", "containers", "names", "tmp", "running"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)
        self.layers = LayerStore(root)
        self.images = ImageStore(root)
        self.containers = ContainerStore(root)
        self.lock_path = root / "store.lock"
        self.running_dir = root / "running"

    def tempdir(self, prefix: str) -> Path:
        """A fresh directory on the store's filesystem (for later renames)."""
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=self.root / "tmp"))


__all__ = ["ContainerRecord", "Image", "Layer", "Store"]
