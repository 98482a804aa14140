"""What the runtime needs to start one container: paths, process and limits."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class RootfsSpec:
    """The overlay root of a container.

    Attributes:
        layers_dir: directory the lower layer names are relative to; the
            mount is made from there so the option string stays short.
        lowers: lower layer directory names, top (nearest) first.
        upper: absolute path of the writable upper directory.
        work: absolute path of overlayfs' work directory (same filesystem).
        merged: absolute path of the mount point.
        binds: files bound read-write onto paths inside the container
            (container path -> host path), e.g. /etc/hostname, /etc/hosts;
            a target missing from the image is skipped.
        readonly_dev: remount /dev read-only once its nodes exist (used where
            no devices cgroup can stop a node made with mknod from being used).
    """

    layers_dir: str
    lowers: list[str]
    upper: str
    work: str
    merged: str
    binds: dict[str, str] = field(default_factory=dict)
    readonly_dev: bool = False


@dataclass
class ProcessSpec:
    """The process a container runs.

    Attributes:
        argv: the command and its arguments; argv[0] is looked up on PATH.
        env: the environment, as KEY=VALUE strings.
        cwd: working directory inside the container (made if missing).
        hostname: the UTS namespace's hostname.
        tty: give the process a pseudo-terminal from the container's devpts.
    """

    argv: list[str]
    env: list[str]
    cwd: str = "/"
    hostname: str = "sandbox"
    tty: bool = False

    def env_value(self, key: str, default: str = "") -> str:
        prefix = key + "="
        for item in reversed(self.env):
            if item.startswith(prefix):
                return item[len(prefix) :]
        return default
