"""Docker-shaped JSON views of the store's images and containers.

The CLI's ``inspect`` prints these, and the REST API returns them, so that
what users (and the docker clients) read has one definition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.runtime.cgroups import Limits
from sandbox.store import Store
from sandbox.store.changes import Change
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
        "Ports": port_list(record),
        "Labels": record.labels,
        "HostConfig": {"NetworkMode": network_mode(record)},
        "NetworkSettings": {"Networks": network_settings(record)["Networks"]},
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
            "NetworkMode": network_mode(record),
            "PortBindings": record.ports,
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
        "NetworkSettings": network_settings(record),
        "SandboxLayers": record.layers + record.committed_layers,
    }


def network_mode(record: ContainerRecord) -> str:
    """HostConfig.NetworkMode: the first network the container joins, or ``none``."""
    return next(iter(record.networks), "none")


def network_settings(record: ContainerRecord) -> dict[str, Any]:
    """NetworkSettings: each network's endpoint (addresses only while it runs), ports."""
    running = record.state == "running"
    networks: dict[str, Any] = {}
    for name, config in record.networks.items() or {"none": {}}.items():
        live = record.endpoints.get(name, {}) if running else {}
        networks[name] = {
            "IPAMConfig": {"IPv4Address": config["IPv4Address"]}
            if config.get("IPv4Address") else None,
            "Links": None,
            "Aliases": config.get("Aliases") or None,
            "MacAddress": live.get("MacAddress", ""),
            "NetworkID": live.get("NetworkID", ""),
            "EndpointID": live.get("EndpointID", ""),
            "Gateway": live.get("Gateway", ""),
            "IPAddress": live.get("IPAddress", ""),
            "IPPrefixLen": live.get("IPPrefixLen", 0),
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DriverOpts": None,
            "DNSNames": live.get("DNSNames"),
        }  # fmt: skip
    first = next(iter(networks.values()))
    ports: dict[str, Any] = {key: None for key in record.ports}
    if running:
        ports.update(record.published)
    return {
        "Bridge": "",
        "SandboxID": record.id if running else "",
        "SandboxKey": f"/proc/{record.pid}/ns/net" if running else "",
        "Ports": ports,
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "IPAddress": first["IPAddress"],
        "IPPrefixLen": first["IPPrefixLen"],
        "Gateway": first["Gateway"],
        "MacAddress": first["MacAddress"],
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPv6Gateway": "",
        "Networks": networks,
    }


def port_list(record: ContainerRecord) -> list[dict[str, Any]]:
    """The ``Ports`` of ``GET /containers/json``: published ones while it runs."""
    if record.state != "running":
        return []
    return [
        {"IP": b["HostIp"], "PrivatePort": int(key.partition("/")[0]),
         "PublicPort": int(b["HostPort"]), "Type": "tcp"}
        for key, bound in record.published.items() for b in bound
    ]  # fmt: skip


def network_view(network: Any, endpoints: list[Any]) -> dict[str, Any]:
    """``GET /networks/{id}``: a `NetworkRecord` and its live `Endpoint`s."""
    config = [{"Subnet": network.subnet, "Gateway": network.gateway}] if network.subnet else []
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": _ts(network.created),
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        # No route out: a network reaches its own containers and nothing else.
        "Internal": network.driver == "bridge",
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {
            e.cid: {
                "Name": e.name,
                "EndpointID": e.endpoint_id,
                "MacAddress": e.plug.mac,
                "IPv4Address": f"{e.plug.address}/{e.plug.prefixlen}",
                "IPv6Address": "",
            }
            for e in endpoints
        },
        "Options": {},
        "Labels": network.labels,
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


def container_changes(record: ContainerRecord, changes: list[Change], *,
                      detail: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """``GET /containers/{id}/changes``: Docker's ``[{"Path", "Kind"}]`` (0 C, 1 A, 2 D).

    With ``detail`` (a sandbox extension, ``?detail=1``) each entry also has:

    - ``Size``: bytes of a regular file as the container has it now; 0 for
      anything else, and for a deleted path;
    - ``Type``: ``file``, ``dir``, ``symlink`` or ``other`` (what the path is
      now; for Kind 2, what was deleted);
    - ``Layer``: for Kind 0 and 2, the lower layer whose copy was copied up
      (or is hidden by the deletion), as a 0-based index from the bottom of
      the container's layer stack (its image's layers, then those its own
      commits added: the layers of the image a commit makes, in order);
      null for Kind 1;
    - ``Opaque``: true for a directory made opaque (``rm -rf d; mkdir d``:
      nothing of the lower ``d`` shows through; what it held is listed as
      deleted).
    """
    if not detail:
        return [{"Path": c.path, "Kind": c.docker_kind} for c in changes]
    depth = len(record.layers) + len(record.committed_layers)
    return [
        {
            "Path": c.path,
            "Kind": c.docker_kind,
            "Size": c.size if c.file_type == "file" else 0,
            "Type": c.file_type,
            # scan_changes counts from the top (the lowers it is given, nearest first).
            "Layer": None if c.layer is None else depth - 1 - c.layer,
            "Opaque": c.opaque,
        }
        for c in changes
    ]
