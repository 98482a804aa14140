"""Is a cell complete? The answer to Jupyter's ``is_complete_request``.

The host's bash parses the cell in parse-only mode (``bash -n``): it reads the
code and never runs any of it, not even a command substitution. Its verdict is
mapped onto Jupyter's three answers:

* ``complete``: bash parsed everything (empty code too);
* ``incomplete``: bash ran out of input inside a construct ("unexpected end of
  file", "unexpected EOF while looking for..."), a here-document never got its
  delimiter (a warning with status 0), or the code ends with a backslash-newline
  (bash -n ignores it);
* ``invalid``: any other syntax error; :func:`syntax_error` gives bash's message.

Lines that begin with ``%`` at the top of a cell are the kernel's magics, not
bash's: line magics are skipped, and after a cell magic (``%%container web``)
only its body is checked. Pure functions, no Jupyter import.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

__all__ = ["is_complete", "shell_body", "syntax_error"]

TIMEOUT = 2.0  # seconds bash may take to parse a cell
INDENT_STEP = "  "

_EOF_MARKERS = ("unexpected end of file", "unexpected EOF")
_HEREDOC_WARNING = "here-document at line"
_QUOTE_EOF = re.compile(r"unexpected EOF while looking for matching `[\"'`]'")
_PREFIX = re.compile(r"^(?:/dev/stdin|bash): ")
_LINE_NO = re.compile(r"\bline (\d+)")
# The last line opens a block whose body is usually indented.
_OPENER = re.compile(r"(?:(?:^|[\s;&|()])(?:do|then|else|in)|[{(|\\]|&&|\$\()$")


@dataclass(frozen=True)
class _Verdict:
    status: str  # complete | incomplete | invalid | unknown
    message: str = ""  # bash's error message (invalid) or ""
    quoted: bool = False  # incomplete inside a quote or a here-document


def shell_body(code: str) -> tuple[str, int]:
    """The shell part of a cell and the number of magic lines before it.

    Leading line magics (``%name ...``) and blank lines are skipped; a cell
    magic line (``%%name ...``) ends the magics: the rest is its body.
    """
    lines = code.split("\n")
    skipped = 0
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("%"):
            break
        skipped += 1
        if stripped.startswith("%%"):
            break
    if not any(line.lstrip().startswith("%") for line in lines[:skipped]):
        return code, 0  # no magic at all: leave the code as it is
    return "\n".join(lines[skipped:]), skipped


def _bash_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": "C.UTF-8"}


def _parse(code: str) -> tuple[int, str] | None:
    """Run ``bash -n`` on ``code``: (status, stderr), or None if bash failed to run."""
    try:
        proc = subprocess.run(
            ["bash", "--norc", "--noprofile", "-O", "extglob", "-n", "/dev/stdin"],
            input=code.encode("utf-8", "surrogatepass"),
            capture_output=True,
            env=_bash_env(),
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def _ends_with_continuation(code: str) -> bool:
    """Does the code end with an unescaped backslash (before at most one newline)?"""
    text = code[:-1] if code.endswith("\n") else code
    run = len(text) - len(text.rstrip("\\"))
    return run % 2 == 1


def _verdict(code: str) -> _Verdict:
    if not code.strip():
        return _Verdict("complete")
    parsed = _parse(code)
    if parsed is None:
        return _Verdict("unknown")
    status, stderr = parsed
    lines = [_PREFIX.sub("", line) for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "warning:" not in line]
    if any(marker in line for line in errors for marker in _EOF_MARKERS):
        return _Verdict("incomplete", quoted=any(_QUOTE_EOF.search(e) for e in errors))
    if status != 0:
        return _Verdict("invalid", "\n".join(errors) or f"bash -n exited with status {status}")
    if any(_HEREDOC_WARNING in line for line in lines):
        return _Verdict("incomplete", quoted=True)
    if _ends_with_continuation(code):
        text = code[:-1] if code.endswith("\n") else code
        last_line = text.rsplit("\n", 1)[-1]
        if "#" not in last_line:  # no comment that could hold the backslash
            return _Verdict("incomplete")
        # Replace the backslash with a quote: still parsed -> it was in a comment.
        probe = _parse(text[:-1] + "'")
        if probe is None or any(m in probe[1] for m in _EOF_MARKERS):
            return _Verdict("incomplete")
    return _Verdict("complete")


def _indent(code: str) -> str:
    """The indentation for the next line of an incomplete cell."""
    lines = [line for line in code.split("\n") if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    base = last[: len(last) - len(last.lstrip())]
    return base + INDENT_STEP if _OPENER.search(last.rstrip()) else base


def is_complete(code: str) -> dict[str, str]:
    """Jupyter's is_complete_reply content for a cell.

    ``{"status": "complete"|"incomplete"|"invalid", "indent": str}``; indent is
    non-empty only for incomplete code (the last line's indentation, plus two
    spaces after ``do``, ``then``, ``{``, ``(``, ``|``...; nothing inside a quote
    or here-document). ``"unknown"`` if bash could not be run at all.
    """
    body, _ = shell_body(code)
    verdict = _verdict(body)
    indent = ""
    if verdict.status == "incomplete" and not verdict.quoted:
        indent = _indent(body)
    return {"status": verdict.status, "indent": indent}


def syntax_error(code: str) -> str | None:
    """bash's syntax error message for an invalid cell, None if it is not invalid.

    Line numbers count the cell's lines, magic lines included.
    """
    body, skipped = shell_body(code)
    verdict = _verdict(body)
    if verdict.status != "invalid":
        return None
    if not skipped:
        return verdict.message
    return _LINE_NO.sub(lambda m: f"line {int(m.group(1)) + skipped}", verdict.message)
