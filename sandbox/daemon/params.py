"""Reading a request's query and JSON body (a 400 names the bad part), writing JSON.

Docker's rules are kept where clients depend on them: a boolean query value is
false only when it is empty, ``0``, ``no``, ``false`` or ``none`` (docker-py
sends ``force=False``), and an empty body means an empty object.
"""

from __future__ import annotations

import json
import re
import signal
from typing import Any, TypeVar

from aiohttp import web

from sandbox.errors import InvalidArgument

T = TypeVar("T")
_FALSE = {"", "0", "no", "false", "none"}


def json_reply(data: Any, status: int = 200) -> web.Response:
    """A JSON reply typed exactly ``application/json``.

    The moby client decodes an error body only when the Content-Type is
    exactly that; with ``; charset=utf-8`` it prints the raw JSON instead.
    """
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json")  # fmt: skip


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter, as Docker reads them."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in _FALSE


def integer(request: web.Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter; ``default`` when absent or empty.

    Raises:
        InvalidArgument: not an integer.
    """
    text = request.query.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {text!r} is not an integer") from None


def signal_number(text: str, default: int) -> int:
    """``KILL``, ``SIGKILL``, ``sigkill`` or ``9`` as a signal number.

    Raises:
        InvalidArgument: no such signal.
    """
    text = text.strip()
    if not text:
        return default
    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signal.Signals}:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise InvalidArgument(f"invalid signal: {text} (use a name like SIGTERM or a number)")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body (or ``null``) is ``{}``.

    Raises:
        InvalidArgument: the body is not JSON, or not an object.
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed JSON in the request body: {exc}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidArgument(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def field(body: dict[str, Any], key: str, kind: type[T] | tuple[type, ...], default: T,
          where: str = "") -> T:  # fmt: skip
    """``body[key]`` checked against ``kind``; ``default`` when missing or null.

    Raises:
        InvalidArgument: the value has another type (booleans are not integers).
    """
    value = body.get(key)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # JSON's true is a Python int too: a boolean is only accepted where asked for.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise InvalidArgument(
            f"invalid {where}{key}: expected {expected}, got {json.dumps(value)[:80]}"
        )
    return value  # type: ignore[return-value]


def string_list(body: dict[str, Any], key: str, where: str = "") -> list[str] | None:
    """A list of strings (a lone string is a one-item list, as Docker's strslice)."""
    value: list[Any] | str | None = field(body, key, (list, str), None)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"invalid {where}{key}: every item must be a string")
    return list(value)


def filters(request: web.Request) -> dict[str, list[str]]:
    """Docker's ``filters`` query: ``{"status": ["exited"]}`` (old form: ``{"exited": true}``)."""
    text = request.query.get("filters", "").strip()
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid filters (not JSON): {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidArgument("invalid filters: expected a JSON object")
    result: dict[str, list[str]] = {}
    for key, value in raw.items():
        values = [k for k, on in value.items() if on] if isinstance(value, dict) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidArgument(f"invalid filter {key!r}: expected a list of strings")
        result[key] = values
    return result


def name_matches(pattern: str, text: str) -> bool:
    """Docker's name filter: a regular expression, so a plain word is a substring.

    Raises:
        InvalidArgument: ``pattern`` is not a regular expression.
    """
    try:
        return re.search(pattern, text) is not None
    except re.error as exc:
        raise InvalidArgument(
            f"invalid filter {pattern!r}: not a regular expression ({exc})"
        ) from None
