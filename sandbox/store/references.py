"""Image references: ``name[:tag]`` parsed, checked and normalised.

The docker CLI sends fully qualified names (``docker.io/library/foo:1``);
the store keeps the familiar form (``foo:1``) that users type and see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.errors import InvalidArgument

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DEFAULT_PREFIXES = ("docker.io/library/", "docker.io/", "index.docker.io/library/")


@dataclass(frozen=True)
class Reference:
    """A parsed ``name:tag``."""

    name: str
    tag: str = "latest"

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def parse(text: str, *, default_tag: str = "latest") -> Reference:
    """Parse and normalise an image reference.

    Raises:
        InvalidArgument: not a valid ``name[:tag]`` (e.g. upper-case letters,
            spaces, an empty name).
    """
    raw = text.strip()
    name, tag = raw, default_tag
    slash = raw.rfind("/")
    colon = raw.rfind(":")
    if colon > slash:
        name, tag = raw[:colon], raw[colon + 1 :]
    if "@" in name:
        raise InvalidArgument(f"invalid reference {text!r}: digests are not supported here")
    for prefix in _DEFAULT_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if not _NAME.match(name):
        raise InvalidArgument(
            f"invalid image name {text!r}: use lower-case letters, digits and . _ - / "
            "(for example myimage:v1)"
        )
    if not _TAG.match(tag):
        raise InvalidArgument(
            f"invalid tag in {text!r}: a tag is up to 128 letters, digits, _ . or -"
        )
    return Reference(name, tag)
