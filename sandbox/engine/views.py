"""Docker-shaped JSON views of the store's images and containers.

The CLI's ``inspect`` prints these, and the REST API returns them, so that
what users (and the docker clients) read has one definition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.runtime.cgroups import Limits
from sandbox.store import Store
from sandbox.store.containers import ContainerRecord
from sandbox.store.images import Image, rfc3339
from sandbox.units import ago


def _ts(epoch: float) -> str:
    return rfc3339(epoch) if epoch else "0001-01-01T00:00:00Z"


def _epoch(stamp: str) -> int:
    try:
        return int(datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
                   .timestamp())  # fmt: skip
    except ValueError:
        return 0


def image_size(store: Store, image: Image) -> int:
    """Bytes of every layer of the image."""
    total = 0
    for layer_id in image.layers:
        try:
            total += store.layers.get(layer_id).size
        except Exception:
            continue
    return total


def status_text(record: ContainerRecord) -> str:
    """The STATUS column: ``Up 5 seconds``, ``Exited (0) 2 minutes ago``, ``Created``."""
    if record.state == "running":
        return f"Up {ago(record.started_at)}"
    if record.state == "exited":
        return f"Exited ({record.exit_code}) {ago(record.finished_at)} ago"
    return "Created"


def container_summary(record: ContainerRecord) -> dict[str, Any]:
    """An item of ``GET /containers/json``."""
    return {
        "Id": record.id,
        "Names": [f"/{record.name}"],
        "Image": record.image,
        "ImageID": f"sha256:{record.image_id}",
        "Command": " ".join(record.cmd),
        "Created": int(record.created),
        "State": record.state,
        "Status": status_text(record),
        "Ports": [],
        "Labels": record.labels,
        "HostConfig": {"NetworkMode": "none"},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }


def container_inspect(store: Store, record: ContainerRecord) -> dict[str, Any]:
    """``GET /containers/{id}/json``."""
    limits = Limits.from_json(record.limits)
    path = store.containers.path(record.id)
    lowers = [str(store.layers.path(i)) for i in reversed(record.layers + record.committed_layers)]
    return {
        "Id": record.id,
        "Created": _ts(record.created),
        "Path": record.cmd[0] if record.cmd else "",
        "Args": record.cmd[1:],
        "State": {
            "Status": record.state,
            "Running": record.state == "running",
            "Paused": False,
            "Restarting": False,
            "OOMKilled": record.oom_killed,
            "Dead": False,
            "Pid": record.pid if record.state == "running" else 0,
            "ExitCode": record.exit_code,
            "Error": record.error,
            "StartedAt": _ts(record.started_at),
            "FinishedAt": _ts(record.finished_at),
        },
        "Image": f"sha256:{record.image_id}",
        "Name": f"/{record.name}",
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "LogPath": str(path / "log.jsonl"),
        "HostConfig": {
            "LogConfig": {"Type": "json-file", "Config": {}},
            "AutoRemove": record.auto_remove,
            "NetworkMode": "none",
            "Memory": limits.memory or 0,
            "MemorySwap": limits.memory_swap or 0,
            "NanoCpus": limits.nano_cpus or 0,
            "CpuShares": limits.cpu_shares or 0,
            "PidsLimit": limits.pids or 0,
        },
        "Config": {
            "Hostname": record.hostname,
            "Tty": record.tty,
            "OpenStdin": record.open_stdin,
            "AttachStdin": record.open_stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Env": record.env,
            "Cmd": record.cmd,
            "Image": record.image,
            "WorkingDir": record.workdir,
            "Labels": record.labels,
        },
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": ":".join(lowers),
                "UpperDir": str(path / "upper"),
                "WorkDir": str(path / "work"),
                "MergedDir": str(path / "merged"),
            },
        },
        "Mounts": [],
        "NetworkSettings": {"Networks": {}},
        "SandboxLayers": record.layers + record.committed_layers,
    }


def image_summary(store: Store, image: Image) -> dict[str, Any]:
    """An item of ``GET /images/json``."""
    return {
        "Id": f"sha256:{image.id}",
        "ParentId": "",
        "RepoTags": image.tags,
        "RepoDigests": [],
        "Created": _epoch(image.created),
        "Size": image_size(store, image),
        "SharedSize": -1,
        "Labels": {},
        "Containers": -1,
    }


def image_inspect(store: Store, image: Image) -> dict[str, Any]:
    """``GET /images/{name}/json``."""
    return {
        "Id": f"sha256:{image.id}",
        "RepoTags": image.tags,
        "RepoDigests": [],
        "Created": image.created,
        "Size": image_size(store, image),
        "Config": image.config.get("config", {}),
        "Architecture": image.config.get("architecture", ""),
        "Os": image.config.get("os", "linux"),
        "RootFS": {"Type": "layers", "Layers": image.config.get("rootfs", {}).get("diff_ids", [])},
        "History": image.history,
        "SandboxLayers": image.layers,
    }


def image_history(store: Store, image: Image) -> list[dict[str, Any]]:
    """``GET /images/{name}/history``: newest first, with each layer's size."""
    layer_ids = iter(image.layers)
    rows: list[dict[str, Any]] = []
    for entry in image.history:
        size = 0
        if not entry.get("empty_layer"):
            layer_id = next(layer_ids, None)
            if layer_id is not None:
                try:
                    size = store.layers.get(layer_id).size
                except Exception:
                    size = 0
        rows.append({
            "Id": "<missing>",
            "Created": _epoch(entry.get("created", "")),
            "CreatedBy": entry.get("created_by", ""),
            "Tags": None,
            "Size": size,
            "Comment": entry.get("comment", ""),
        })  # fmt: skip
    rows.reverse()
    if rows:
        rows[0]["Id"] = f"sha256:{image.id}"
        rows[0]["Tags"] = image.tags or None
    return rows
