"""Completion and inspection: word_at, complete and inspect with a stand-in runner.

The real kernel runs the generated scripts in a throwaway container of the
session (its cwd, variables, functions and aliases restored). Here ``host_runner``
stands in for it: it runs the script with the host's bash in a temp directory
holding files the test made, after a few definitions that play the session's
restored shell state.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_kernel import completion
from sandbox_kernel.completion import MAX_MATCHES, Runner, complete, inspect, word_at

from sandbox.errors import DaemonUnreachable

TEMP_PREFIX = "sandbox-test-"

STATE = """
greet() { echo "hello $1"; }
alias ll='ls -l'
export GREETING=hi
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A cwd with sub/file.txt, sub/dir/, 'my file', it's, .hidden and many/ (600 files)."""
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX + "completion-") as d:
        root = Path(d)
        (root / "sub" / "dir").mkdir(parents=True)
        (root / "sub" / "file.txt").write_text("x")
        (root / "my file").write_text("x")
        (root / "it's").write_text("x")
        (root / ".hidden").write_text("x")
        (root / "many").mkdir()
        for i in range(600):
            (root / "many" / f"f{i:03}").write_text("")
        yield root


def host_runner(cwd: Path, scripts: list[str] | None = None, state: str = STATE) -> Runner:
    """A Runner that runs the script with the host's bash in ``cwd`` (not a container)."""

    async def run(script: str) -> tuple[int, str, str]:
        if scripts is not None:
            scripts.append(script)
        env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"}
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", state + script, cwd=cwd, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    return run


def do_complete(code: str, cwd: Path, cursor: int | None = None) -> dict[str, Any]:
    pos = len(code) if cursor is None else cursor
    return asyncio.run(complete(code, pos, host_runner(cwd)))


def matches(code: str, cwd: Path) -> list[str]:
    reply = do_complete(code, cwd)
    assert reply["status"] == "ok"
    assert reply["metadata"] == {}
    assert reply["cursor_end"] == len(code)
    found: list[str] = reply["matches"]
    return found


def do_inspect(code: str, cwd: Path, detail_level: int = 0) -> dict[str, Any]:
    return asyncio.run(inspect(code, len(code), detail_level, host_runner(cwd)))


# -- word_at -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "word"),
    [
        ("", ""),
        ("ech", "ech"),
        ("echo ", ""),
        ("ls -l sub/fi", "sub/fi"),
        ("cat ~/doc", "~/doc"),
        ("cat ./sc", "./sc"),
        ("echo $HO", "$HO"),
        ("echo ${HO", "${HO"),
        ("echo $", "$"),
        ('echo "$HO', "$HO"),
        ("echo a$HO", "$HO"),
        ("ls | gr", "gr"),
        ("ls|gr", "gr"),
        ("ls; ec", "ec"),
        ("ls && ec", "ec"),
        ("ls || ec", "ec"),
        ("x=$(ec", "ec"),
        ("echo `ec", "ec"),
        ("(cd /tmp; l", "l"),
        ('cat "my fi', "my fi"),
        ("cat 'my fi", "my fi"),
        ('cat sub/"my fi', "my fi"),
        ("cat my\\ fi", "my\\ fi"),
        ("cat < in", "in"),
        ("ls 2>er", "er"),
        ("ls >out", "out"),
        ("PATH=/usr/bin:/us", "/us"),
        ("ls --file=sub/f", "sub/f"),
        ("echo 'done' ; ech", "ech"),
        ("echo a # a comment", ""),
        ("cat <<EOF\nsome body", ""),
        ("cat <<EOF\nbody\nEOF\nech", "ech"),
        ("echo 🐍 && ec", "ec"),
    ],
)
def test_word_at(code: str, word: str) -> None:
    text, start, end = word_at(code, len(code))
    assert (text, end) == (word, len(code))
    assert code[start:end] == text


def test_word_at_cursor_in_the_middle() -> None:
    code = "echo hello | grep hel && ls"
    cursor = code.index("hel && ") + 3
    assert word_at(code, cursor) == ("hel", cursor - 3, cursor)
    assert word_at(code, 2) == ("ec", 0, 2)
    assert word_at(code, 0) == ("", 0, 0)


def test_word_at_counts_code_points() -> None:
    code = "echo 🐍🐍 é; cat sub/fi"
    text, start, end = word_at(code, len(code))
    assert (text, start, end) == ("sub/fi", len(code) - 6, len(code))
    assert len(code.encode("utf-16-le")) // 2 != len(code)  # astral: UTF-16 would differ


def test_word_at_clamps_the_cursor() -> None:
    assert word_at("ech", 99) == ("ech", 0, 3)
    assert word_at("ech", -5) == ("", 0, 0)


# -- complete ----------------------------------------------------------------


def test_command(workdir: Path) -> None:
    assert matches("ech", workdir) == ["echo"]
    reply = do_complete("ech", workdir)
    assert (reply["cursor_start"], reply["cursor_end"]) == (0, 3)


def test_command_kinds(workdir: Path) -> None:
    assert "greet" in matches("gre", workdir)  # a function of the session
    assert "grep" in matches("gre", workdir)  # a program on PATH
    assert "ll" in matches("l", workdir)  # an alias
    assert "local" in matches("l", workdir)  # a builtin
    assert matches("whil", workdir) == ["while"]  # a keyword
    found = matches("e", workdir)
    assert found == sorted(set(found)) and found.count("echo") == 1


@pytest.mark.parametrize(
    "code",
    ["ls | ec", "ls; ec", "ls && ec", "ls || ec", "x=$(ec", "(ec", "if ec", "if true; then ec",
     "for i in 1; do ec", "sudo ec", "env A=1 ec", "time ec", "FOO=1 ec", "echo `ec"],
)  # fmt: skip
def test_command_position(workdir: Path, code: str) -> None:
    assert matches(code, workdir) == ["echo"]


def test_argument_position_is_files(workdir: Path) -> None:
    assert matches("echo su", workdir) == ["sub/"]
    assert matches("echo ec", workdir) == []  # not a command here


def test_path(workdir: Path) -> None:
    reply = do_complete("cat sub/fi", workdir)
    assert reply["matches"] == ["sub/file.txt"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 10)


def test_directory_gets_a_slash(workdir: Path) -> None:
    assert matches("cd su", workdir) == ["sub/"]
    assert matches("ls sub/", workdir) == ["sub/dir/", "sub/file.txt"]
    assert matches("ls sub/d", workdir) == ["sub/dir/"]


def test_path_in_command_position(workdir: Path) -> None:
    assert matches("./su", workdir) == ["./sub/"]
    assert matches("sub/f", workdir) == ["sub/file.txt"]


def test_hidden_files_and_home(workdir: Path) -> None:
    assert matches("cat .hid", workdir) == [".hidden"]
    assert matches("cat ~/su", workdir) == ["~/sub/"]  # HOME is the workdir here
    assert matches("cat $HOME/su", workdir) == ["$HOME/sub/"]
    assert matches("cat ${HOME}/sub/fi", workdir) == ["${HOME}/sub/file.txt"]
    assert matches("cat $NO_SUCH_VAR/su", workdir) == []


def test_special_characters_are_escaped(workdir: Path) -> None:
    assert matches("cat my", workdir) == ["my\\ file"]
    assert matches("cat it", workdir) == ["it\\'s"]
    assert matches("cat my\\ f", workdir) == ["my\\ file"]


def test_inside_open_quotes(workdir: Path) -> None:
    reply = do_complete('cat "my', workdir)
    assert reply["matches"] == ["my file"]
    assert reply["cursor_start"] == 5
    assert matches("cat 'it", workdir) == ["it'\\''s"]
    assert matches('cat "sub/fi', workdir) == ["sub/file.txt"]
    assert matches('cat sub/"fi', workdir) == ["file.txt"]  # the token starts after the quote


def test_variable(workdir: Path) -> None:
    reply = do_complete("echo $HO", workdir)
    assert "$HOME" in reply["matches"]
    assert all(m.startswith("$HO") for m in reply["matches"])
    assert (reply["cursor_start"], reply["cursor_end"]) == (5, 8)
    assert matches("echo $GREET", workdir) == ["$GREETING"]
    assert matches('echo "$GREET', workdir) == ["$GREETING"]
    assert matches("echo sub/$GREET", workdir) == ["$GREETING"]


def test_braced_variable(workdir: Path) -> None:
    reply = do_complete("echo ${HO", workdir)
    assert "${HOME" in reply["matches"]
    assert all(m.startswith("${HO") for m in reply["matches"])
    assert (reply["cursor_start"], reply["cursor_end"]) == (5, 9)
    assert matches('echo "${GREET', workdir) == ["${GREETING"]


def test_cap(workdir: Path) -> None:
    found = matches("ls many/", workdir)
    assert len(found) == MAX_MATCHES
    assert found == sorted(found) and found[0] == "many/f000"


def test_cursor_in_the_middle(workdir: Path) -> None:
    code = "cat sub/fi | wc -l"
    reply = do_complete(code, workdir, cursor=code.index(" |"))
    assert reply["matches"] == ["sub/file.txt"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 10)


@pytest.mark.parametrize(
    "code",
    [
        "$(touch pwned)",
        "cat $(touch pwned)",
        "cat `touch pwned`",
        "cat '$(touch pwned)",
        'cat "`touch pwned`',
        '"; touch pwned; "',
        "cat '; touch pwned; '",
        "cat \"'; touch pwned; '",
        "echo ${x:-$(touch pwned)}",
        "cat $'\\'; touch pwned; \\''",
        "cat a\\;touch\\ pwned",
        "cat $(touch pwned)/",
        "cat ~$(touch pwned)/",
        "x\ntouch pwned; ech",  # an earlier line is never run either
    ],
)
def test_hostile_word_runs_nothing(workdir: Path, code: str) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    reply = do_complete(code, workdir)
    assert reply["status"] == "ok"
    assert not (workdir / "pwned").exists()
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.parametrize(
    "word",
    ["$(touch pwned)", "`touch pwned`", "'; touch pwned; '", '"; touch pwned; "', "x\ntouch pwned",
     "\\'$(touch pwned)", "$HOME/$(touch pwned)"],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["command", "variable", "file"])
def test_generated_script_quotes_any_word(workdir: Path, word: str, kind: str) -> None:
    """Whatever the lexer gives, the script passes the word quoted."""
    target = completion._Word(word, 0, len(word), kind, word)
    script, _ = completion.completion_script(target)
    asyncio.run(host_runner(workdir)(script))
    assert not (workdir / "pwned").exists()
    script = completion.inspect_script(word)
    asyncio.run(host_runner(workdir)(script))
    assert not (workdir / "pwned").exists()


def test_failing_runner_gives_no_matches() -> None:
    async def unreachable(script: str) -> tuple[int, str, str]:
        raise DaemonUnreachable("no daemon answers")

    async def failing(script: str) -> tuple[int, str, str]:
        return 1, "echo\n", "restore failed"

    async def broken(script: str) -> tuple[int, str, str]:
        raise OSError("connection reset")

    for run in (unreachable, failing, broken):
        reply = asyncio.run(complete("ech", 3, run))
        assert reply == {"status": "ok", "matches": [], "cursor_start": 0, "cursor_end": 3,
                         "metadata": {}}  # fmt: skip
        assert asyncio.run(inspect("ls", 2, 0, run))["found"] is False


def test_no_completion_in_a_comment_runs_nothing() -> None:
    async def never(script: str) -> tuple[int, str, str]:
        raise AssertionError("the runner should not be called")

    reply = asyncio.run(complete("ls # ec", 7, never))
    assert reply["matches"] == [] and reply["status"] == "ok"


def test_strict_shell_options_of_the_session(workdir: Path) -> None:
    """A session that ran `set -euo pipefail` still completes and inspects."""
    run = host_runner(workdir, state=STATE + "set -euo pipefail\nunset HOME\n")
    assert asyncio.run(complete("cat sub/", 8, run))["matches"] == ["sub/dir/", "sub/file.txt"]
    assert asyncio.run(complete("nosuchprefix", 12, run))["matches"] == []
    assert asyncio.run(complete("echo $GREET", 11, run))["matches"] == ["$GREETING"]
    assert asyncio.run(inspect("cd", 2, 0, run))["found"] is True
    assert asyncio.run(inspect("nosuchcommand", 2, 0, run))["found"] is False


def test_one_run_per_request(workdir: Path) -> None:
    scripts: list[str] = []
    asyncio.run(complete("cat sub/fi", 10, host_runner(workdir, scripts)))
    assert len(scripts) == 1
    assert "compgen -f" in scripts[0]


# -- inspect -----------------------------------------------------------------


def test_inspect_builtin(workdir: Path) -> None:
    reply = do_inspect("cd", workdir)
    assert reply["status"] == "ok" and reply["found"] is True
    assert reply["metadata"] == {}
    assert "Change the shell working directory" in reply["data"]["text/plain"]


def test_inspect_keyword(workdir: Path) -> None:
    reply = do_inspect("for i in 1 2", workdir)
    assert reply["found"] is True
    assert "for NAME" in reply["data"]["text/plain"]
    reply = do_inspect("for i in 1 2; do", workdir)  # the keyword under the cursor
    assert reply["data"]["text/plain"] == "do is a shell keyword"  # help has no topic for do


def test_inspect_missing_command(workdir: Path) -> None:
    reply = do_inspect("no-such-command-here --flag", workdir)
    assert reply == {"status": "ok", "found": False, "data": {}, "metadata": {}}
    assert do_inspect("", workdir)["found"] is False
    assert do_inspect("   ", workdir)["found"] is False


def test_inspect_external(workdir: Path) -> None:
    reply = do_inspect("ls", workdir)
    assert reply["found"] is True
    text = reply["data"]["text/plain"]
    first = text.splitlines()[0]
    assert (first.startswith("ls is ") and first.endswith("ls")) or "ls)" in first
    assert "Usage" in text or "usage" in text
    assert len(text.splitlines()) <= 2 + completion.HELP_LINES[0]
    more = do_inspect("ls", workdir, detail_level=1)["data"]["text/plain"]
    assert len(more.splitlines()) > len(text.splitlines())


def test_inspect_function_and_alias(workdir: Path) -> None:
    reply = do_inspect("greet world", workdir)
    assert reply["found"] is True
    assert reply["data"]["text/plain"].startswith("greet ()")
    assert 'echo "hello $1"' in reply["data"]["text/plain"]
    assert do_inspect("ll", workdir)["data"]["text/plain"] == "alias ll='ls -l'"


def test_inspect_finds_the_command_of_the_cursor(workdir: Path) -> None:
    run = host_runner(workdir)
    code = "echo hi | grep -v x"
    text = asyncio.run(inspect(code, len(code), 0, run))["data"]["text/plain"]
    assert text.startswith("grep is ")  # the command of the argument under the cursor
    text = asyncio.run(inspect(code, 2, 0, run))["data"]["text/plain"]
    assert text.startswith("echo: echo")  # the word under the cursor, read to its end
    text = asyncio.run(inspect("sudo ls -l", 10, 0, run))["data"]["text/plain"]
    assert text.startswith("ls is ")


def test_inspect_never_runs_the_cell(workdir: Path) -> None:
    for code in ("touch pwned", "$(touch pwned)", "x=$(touch pwned) ls", "`touch pwned`"):
        asyncio.run(inspect(code, len(code), 0, host_runner(workdir)))
    assert not (workdir / "pwned").exists()
