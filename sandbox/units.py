"""Parse and print the sizes and CPU amounts users type (``64m``, ``0.5``), and durations."""

from __future__ import annotations

import re
import time

from sandbox.errors import InvalidArgument

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse a byte size as Docker does: ``64m``, ``1g``, ``512k``, ``1048576``.

    Units are powers of 1024 (``m`` = MiB). Raises InvalidArgument naming the
    option when the text is not a size.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise InvalidArgument(
            f"invalid {what} {text!r}: use a number with an optional unit b, k, m or g "
            "(for example 64m or 1g)"
        )
    number, unit = match.groups()
    return int(float(number) * _FACTORS[unit.lower()])


def parse_memory_swap(text: str | int) -> int:
    """Parse ``--memory-swap``: a size, or -1 for unlimited swap."""
    if str(text).strip() == "-1":
        return -1
    return parse_size(text, what="--memory-swap")


def parse_cpus(text: str | float) -> int:
    """Parse ``--cpus 0.5`` into nano-CPUs (0.5 CPU = 500_000_000)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"invalid --cpus {text!r}: use a number of CPUs such as 0.5 or 2"
        ) from None
    if value <= 0 or value > 1024:
        raise InvalidArgument(f"invalid --cpus {text!r}: it must be more than 0")
    return round(value * 1e9)


def human_size(n: int | float, *, base: int = 1000) -> str:
    """Print a size the way the docker CLI does (``4.26MB``; base 1024 gives ``MiB``)."""
    units = ["B", "kB", "MB", "GB", "TB"] if base == 1000 else ["B", "KiB", "MiB", "GiB", "TiB"]
    value = float(n)
    for unit in units:
        if abs(value) < base or unit == units[-1]:
            if unit == "B":
                return f"{int(value)}{unit}"
            text = f"{value:.3g}"
            # 999.5 to 1023 would read 1e+03: print such a value whole, as 1023KiB.
            return f"{text if 'e' not in text else f'{value:.0f}'}{unit}"
        value /= base
    raise AssertionError("unreachable")  # [should never happen]


def ago(epoch: float, now: float | None = None) -> str:
    """``5 seconds``, ``2 minutes``, as Docker words durations."""
    delta = max(0, int((now or time.time()) - epoch))
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= seconds:
            n = delta // seconds
            return f"{n} {unit}{'s' if n > 1 else ''}"
    if delta < 1:
        return "Less than a second"
    return "1 second" if delta == 1 else f"{delta} seconds"
