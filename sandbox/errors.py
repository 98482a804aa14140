"""The one exception tree of jupyter-sandbox.

Every failure a user can cause ends in one of these, with a message that says
what went wrong and what to do. Callers pick the level they need::

    SandboxError                      anything the sandbox reports on purpose
    ├── InvalidArgument               a malformed option, limit, name or request
    │   └── LimitUnsupported          a limit this host's cgroups cannot enforce
    ├── NotFound
    │   ├── ImageNotFound
    │   ├── ContainerNotFound
    │   ├── ExecNotFound              no exec instance with this ID (``docker exec``)
    │   └── LayerNotFound
    ├── Conflict                      a name in use, a running container removed...
    │   ├── ContainerNotRunning
    │   └── ContainerRunning
    ├── StoreError                    the store on disk is damaged or locked
    ├── RuntimeFailure                a container could not be set up (names the step)
    │   └── CommandNotFound           the container's command does not exist (exit 127)
    ├── PermissionDenied              the caller may not touch this object
    └── DaemonUnreachable             no daemon answers (and none could be started)

The daemon maps each class to an HTTP status (``http_status``); the client
turns a status and message back into the same class; the CLI prints the
message on one line.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: a failure the sandbox reports with a readable message."""

    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(SandboxError):
    """A malformed option, limit, name or request."""

    http_status = 400


class LimitUnsupported(InvalidArgument):
    """A resource limit this host's cgroups cannot enforce."""

    def __init__(self, limit: str, controller: str, checked: str) -> None:
        super().__init__(
            f"cannot enforce {limit}: the cgroup controller `{controller}` is not "
            f"available under {checked}; run without this limit or enable the controller"
        )
        self.limit = limit
        self.controller = controller
        self.checked = checked


class NotFound(SandboxError):
    """Something named by the user does not exist."""

    http_status = 404


class ImageNotFound(NotFound):
    """No image with this name, tag or ID."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"No such image: {ref} (see `sandbox images` for the images you have; "
            "`sandbox image build-base` makes the default image `base`)"
        )
        self.ref = ref


class ContainerNotFound(NotFound):
    """No container with this name or ID (prefix)."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref} (see `sandbox ps -a`)")
        self.ref = ref


class ExecNotFound(NotFound):
    """No exec instance with this ID (they live until their container exits)."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"No such exec instance: {ref}")
        self.ref = ref


class NetworkNotFound(NotFound):
    """No network with this name or ID (prefix)."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"No such network: {ref} (see `sandbox network ls`; "
            "`sandbox network create NAME` makes one)"
        )
        self.ref = ref


class LayerNotFound(NotFound):
    """A layer the store refers to is missing."""


class Conflict(SandboxError):
    """The request conflicts with the current state (a name in use, ...)."""

    http_status = 409


class ContainerNotRunning(Conflict):
    """The container is not running, and the operation needs it to be."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"Container {ref} is not running")


class ContainerRunning(Conflict):
    """The container is running, and the operation needs it stopped."""

    def __init__(self, ref: str, what: str, *, force_hint: bool = True) -> None:
        hint = "stop it first (`sandbox kill`)" + (", or use --force" if force_hint else "")
        super().__init__(f"You cannot {what} the running container {ref}: {hint}")


class StoreError(SandboxError):
    """The store on disk is damaged, or could not be written."""


class RuntimeFailure(SandboxError):
    """A container could not be set up; the message names the failed step."""

    def __init__(self, message: str, *, step: str = "", errno: int = 0) -> None:
        super().__init__(message)
        self.step = step
        self.errno = errno


class CommandNotFound(RuntimeFailure):
    """The container's command was not found on its PATH (exit status 127)."""

    http_status = 400


class PermissionDenied(SandboxError):
    """The caller may not see or change this object."""

    http_status = 403


class DaemonUnreachable(SandboxError):
    """No sandbox daemon answers on the socket, and none could be started."""

    http_status = 503


__all__ = [
    "CommandNotFound",
    "Conflict",
    "ContainerNotFound",
    "ContainerNotRunning",
    "ContainerRunning",
    "DaemonUnreachable",
    "ExecNotFound",
    "ImageNotFound",
    "InvalidArgument",
    "LayerNotFound",
    "LimitUnsupported",
    "NotFound",
    "PermissionDenied",
    "RuntimeFailure",
    "SandboxError",
    "StoreError",
]
