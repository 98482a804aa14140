"""``/_ping``, ``/version``, ``/info``: what the clients ask before anything else.

The docker CLI pings first and takes the lower of its version and our
``Api-Version`` header; docker-py reads ``ApiVersion`` from ``/version``
(unversioned). 1.44 is the lowest version the moby v29 client accepts and
works with CLI 28 as well.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
from importlib import metadata

from aiohttp import web

from sandbox.daemon import access
from sandbox.daemon.params import json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.store.containers import RUNNING

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"
OS_TYPE = "linux"


@functools.cache  # a metadata lookup: ~0.1 ms, and it goes in every reply's headers
def server_version() -> str:
    try:
        return metadata.version("jupyter-sandbox")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


async def ping(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /_ping``: 200 ``OK`` and the headers the CLI negotiates with."""
    return web.Response(
        text="OK",
        headers={
            "Docker-Experimental": "false",
            "Ostype": OS_TYPE,
            "Builder-Version": "1",
            "Cache-Control": "no-cache, no-store, must-revalidate",
            "Pragma": "no-cache",
        },
    )


async def version(request: web.Request) -> web.StreamResponse:
    """``GET /version``."""
    ver = server_version()
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": OS_TYPE,
               "Arch": _arch(), "KernelVersion": platform.release()}  # fmt: skip
    return json_reply({
        "Platform": {"Name": "jupyter-sandbox"},
        "Components": [{"Name": "Engine", "Version": ver, "Details": details}],
        "Version": ver,
        **details,
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "BuildTime": "",
    })  # fmt: skip


async def info(request: web.Request) -> web.StreamResponse:
    """``GET /info``: counts (of what the caller may see), the store, the host, the limits."""
    engine = supervisor(request).engine
    records = access.containers(request)
    running = sum(1 for r in records if r.state == RUNNING)
    cgroup_version = str(engine.driver.version)
    try:
        with open("/proc/meminfo") as f:
            mem_total = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem_total = 0
    return json_reply({
        "ID": "",
        "Containers": len(records),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": len(records) - running,
        "Images": len(access.images(request)),
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "overlayfs layers of the sandbox store"]],
        "DockerRootDir": str(engine.store.root),
        "MemoryLimit": True,
        "SwapLimit": True,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "PidsLimit": True,
        "OomKillDisable": False,
        "IPv4Forwarding": False,
        "Debug": False,
        "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": 0,
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "KernelVersion": platform.release(),
        "OperatingSystem": "jupyter-sandbox",
        "OSVersion": "",
        "OSType": OS_TYPE,
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem_total,
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": server_version(),
        "Runtimes": {"sandbox": {"path": "sandboxd"}},
        "DefaultRuntime": "sandbox",
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False},
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "tini",
        "SecurityOptions": ["name=cgroupns", "name=no-new-privileges"],
        "Warnings": [],
    })  # fmt: skip


ROUTES: list[Route] = [
    ("GET", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
]
