"""is_complete and syntax_error: the host's bash -n judges a cell, without running it."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_kernel import syntax
from sandbox_kernel.syntax import is_complete, shell_body, syntax_error

TEMP_PREFIX = "sandbox-test-"


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX + "syntax-") as d:
        yield Path(d)


COMPLETE = [
    "",
    "   \n\n",
    "echo hello",
    "for i in 1; do echo $i; done",
    "if true; then\n  echo yes\nfi",
    "case x in\n  a) echo a ;;\nesac",
    "f() {\n  echo hi\n}",
    "cat <<EOF\nhello\nEOF",
    "cat <<-EOF\n\thello\n\tEOF",
    "echo a \\\\",  # an escaped backslash, not a continuation
    "echo a \\\n\n",  # a continuation, then an empty line ends the command
    "echo a # a comment \\",  # the backslash is in the comment
    "echo a # it's a comment \\",
    "ls !(x)",  # extglob
    "echo 'it''s' \"a\\\"b\"",
    "echo $(ls) `pwd` $((1 + 2)) ${HOME:-/}",
]

INCOMPLETE = [
    'echo "abc',
    "echo 'abc",
    "echo `ls",
    "for i in 1; do",
    "for i in 1 2 3\ndo\n  echo $i",
    "if true; then",
    "if true; then echo a; else",
    "while true",
    "case x in",
    "{",
    "(",
    "f() {",
    "echo $(ls",
    "echo ${HOME",
    "echo $((1 +",
    "a=(1 2",
    "[[ -f x",
    "cat <<EOF\nhello",
    "cat <<EOF",
    "echo a \\",
    "echo a \\\n",
    'echo "#" \\',  # a '#' in the line, but not a comment
    "ls |",
    "ls &&",
    "ls ||",
    "ls |\n",
]

INVALID = ["fi fi )", "done", ")", "echo hi;;", "if then fi", "ls <", "| ls", "echo a )("]


@pytest.mark.parametrize("code", COMPLETE)
def test_complete(code: str) -> None:
    assert is_complete(code) == {"status": "complete", "indent": ""}
    assert syntax_error(code) is None


@pytest.mark.parametrize("code", INCOMPLETE)
def test_incomplete(code: str) -> None:
    assert is_complete(code)["status"] == "incomplete"
    assert syntax_error(code) is None


@pytest.mark.parametrize("code", INVALID)
def test_invalid(code: str) -> None:
    assert is_complete(code) == {"status": "invalid", "indent": ""}
    message = syntax_error(code)
    assert message and "syntax error" in message


def test_error_message_is_bash_s_in_english() -> None:
    message = syntax_error("echo ok\nfi fi )")
    assert message == "line 2: syntax error near unexpected token `fi'\nline 2: `fi fi )'"


@pytest.mark.parametrize(
    ("code", "indent"),
    [
        ("for i in 1; do", "  "),
        ("if true; then", "  "),
        ("if true; then echo; else", "  "),
        ("case x in", "  "),
        ("f() {", "  "),
        ("(", "  "),
        ("ls |", "  "),
        ("ls &&", "  "),
        ("echo a \\", "  "),
        ("x=$(", "  "),
        ("  while true; do", "    "),
        ("for i in 1; do\n  echo $i", "  "),
        ("for i in 1; do\n  if true; then", "    "),
        ("for i in 1\ndo\n", "  "),
        ('echo "abc', ""),  # inside a quote: nothing added
        ("  echo 'abc", ""),
        ("cat <<EOF\n  hello", ""),  # a here-document body is literal
    ],
)
def test_indent(code: str, indent: str) -> None:
    assert is_complete(code) == {"status": "incomplete", "indent": indent}


def test_heredoc_without_delimiter_is_incomplete_not_a_warning() -> None:
    """bash -n only warns (status 0) when a here-document hits the end of file."""
    proc = subprocess.run(["bash", "-n"], input=b"cat <<EOF\nhello\n", capture_output=True)
    assert proc.returncode == 0 and b"here-document" in proc.stderr
    assert is_complete("cat <<EOF\nhello\n")["status"] == "incomplete"
    assert is_complete("cat <<'END'\nhello\nEOF")["status"] == "incomplete"
    assert is_complete("cat <<'END'\nhello\nEND")["status"] == "complete"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("%limits memory=64m", "complete"),
        ("%limits memory=64m pids=32", "complete"),
        ("%%container web", "complete"),
        ("%%container web\necho hello", "complete"),
        ("%%container web\nfor i in 1; do", "incomplete"),
        ("%%container web\nfi fi", "invalid"),
        ("%limits memory=64m\necho 'x", "incomplete"),
        ("%limits memory=64m\n%%container web\nif true; then", "incomplete"),
        ("%%bash --weird 'option\necho ok", "complete"),  # the magic line is not bash's
    ],
)
def test_magics(code: str, status: str) -> None:
    assert is_complete(code)["status"] == status


def test_magic_lines_count_in_error_line_numbers() -> None:
    assert syntax_error("%%container web\necho ok\nfi") == (
        "line 3: syntax error near unexpected token `fi'\nline 3: `fi'"
    )


def test_shell_body() -> None:
    assert shell_body("echo a\necho b") == ("echo a\necho b", 0)
    assert shell_body("%limits memory=64m\necho a") == ("echo a", 1)
    assert shell_body("%%container web\n%not a magic\necho a") == ("%not a magic\necho a", 1)
    assert shell_body("\n%limits x=1\n\nls") == ("ls", 3)


def test_bash_n_runs_nothing(scratch: Path) -> None:
    """bash -n parses command substitutions without running them."""
    target = scratch / "x"
    for code in (f"echo $(touch {target})", f"echo `touch {target}`", f"cat <(touch {target})"):
        proc = subprocess.run(["bash", "-n"], input=code.encode(), capture_output=True)
        assert proc.returncode == 0
        assert not target.exists()


@pytest.mark.parametrize(
    "template",
    [
        "echo $(touch {t})",
        "touch {t}",
        "echo `touch {t}`",
        "cat <(touch {t})",
        'x=$(touch {t}); echo "$x',  # incomplete
        "cat <<EOF\n$(touch {t})\n",  # incomplete here-document
        "touch {t}; fi fi",  # invalid
        "exec touch {t}",
        "%%container web\ntouch {t}",
    ],
)
def test_is_complete_runs_nothing(scratch: Path, template: str) -> None:
    target = scratch / "pwned"
    code = template.format(t=target)
    is_complete(code)
    syntax_error(code)
    assert not target.exists()
    assert list(scratch.iterdir()) == []


def test_environment_is_empty_but_path_and_lang(monkeypatch: pytest.MonkeyPatch) -> None:
    """BASH_ENV and friends from the kernel's environment never reach bash."""
    monkeypatch.setenv("BASH_ENV", "/nonexistent/evil")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    assert set(syntax._bash_env()) == {"PATH", "LANG"}
    assert syntax._bash_env()["LANG"] == "C.UTF-8"
    assert syntax_error("fi") == "line 1: syntax error near unexpected token `fi'\nline 1: `fi'"


def test_one_bash_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = subprocess.run

    def counting(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(args)
        assert kw.get("timeout") == syntax.TIMEOUT
        return real(args, **kw)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(syntax.subprocess, "run", counting)
    for code in ("echo hi", "for i in 1; do", "fi fi", "cat <<EOF\nx", "echo a \\", ""):
        calls.clear()
        is_complete(code)
        assert len(calls) == (1 if code else 0), code
        assert "-n" in calls[0] if calls else True


def test_bash_missing_or_slow_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def timeout(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        raise subprocess.TimeoutExpired(args, syntax.TIMEOUT)

    monkeypatch.setattr(syntax.subprocess, "run", timeout)
    assert is_complete("echo hi") == {"status": "unknown", "indent": ""}
    assert syntax_error("echo hi") is None
    monkeypatch.undo()
    monkeypatch.setattr(syntax, "_bash_env", lambda: {"PATH": "/nonexistent", "LANG": "C.UTF-8"})
    assert is_complete("echo hi") == {"status": "unknown", "indent": ""}


def test_large_cell() -> None:
    code = "\n".join(f"echo line {i} | tr a-z A-Z" for i in range(5000))
    assert is_complete(code)["status"] == "complete"
    assert is_complete(code + "\nif true; then")["status"] == "incomplete"


def test_unicode_and_odd_characters() -> None:
    assert is_complete("echo 'héllo 🐍'")["status"] == "complete"
    assert is_complete("echo 'héllo 🐍")["status"] == "incomplete"
    assert is_complete("echo '\udcff'")["status"] == "complete"
