"""What a cell of the "Bash (sandbox)" kernel is: a fresh container, one bash session.

Every test drives the real kernel over jupyter_client (the module's ``kernel``
fixture) and reads what a notebook would: the stream, error and display
messages and the execute reply. Cells of one test follow each other in one
kernel; tests that change the shell state (options, HOME, limits) put it back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import Cell, Driver, ok

CUT_BYTES = 256 << 10  # what the notebook shows of a cell's output at most


def sandbox_cmd(*args: str, root: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """The real ``sandbox`` CLI of the venv on ``root`` (as tests/conftest.py's helper)."""
    env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1"}
    exe = Path(sys.executable).with_name("sandbox")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, timeout=timeout,
                          check=False)  # fmt: skip


def failed(kernel: Driver, code: str, *, timeout: float = 60) -> Cell:
    """Run ``code``, which must end in an error reply with exactly one error message."""
    cell = kernel.run(code, timeout=timeout)
    assert cell.status == "error", (code, cell.reply, cell.messages)
    assert len(cell.errors) == 1, (code, cell.messages)
    assert cell.errors[0]["ename"] == cell.reply["ename"]
    assert cell.errors[0]["evalue"] == cell.reply["evalue"]
    return cell


def streams(cell: Cell) -> list[tuple[str, str]]:
    """The cell's stream messages as (name, text), in the order they came."""
    return [(m["content"]["name"], m["content"]["text"])
            for m in cell.messages if m["msg_type"] == "stream"]  # fmt: skip


def layer_rows(kernel: Driver) -> list[str]:
    """The rows of `%layers` that stand for read-only layers (numbered)."""
    out = ok(kernel, "%layers").plain
    return [line for line in out.splitlines() if re.match(r"\s*\d+\s", line)]


# -- one fresh container per cell ------------------------------------------------------


def test_hostname_is_sandbox(kernel: Driver) -> None:
    cell = ok(kernel, "cat /proc/sys/kernel/hostname; hostname")
    assert cell.stdout == "sandbox\nsandbox\n"
    assert cell.stderr == ""


def test_each_cell_has_its_own_pid_namespace(kernel: Driver) -> None:
    """The cell's bash is PID 2 under the container's init (PID 1), in every cell."""
    code = "echo $$; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'"
    for _ in range(2):
        shell_pid, init, count = ok(kernel, code).stdout.split()
        assert shell_pid == "2"
        assert init in ("tini", "memfd:tini")  # the engine's sealed init
        # bash, tini, and the pipeline (ls, grep): nothing of the host's
        assert int(count) <= 5


def test_memory_of_a_cell_does_not_survive(kernel: Driver) -> None:
    """A cell's processes and in-memory files (/dev/shm) end with its container."""
    ok(kernel, "echo here > /dev/shm/marker; cat /dev/shm/marker")
    assert ok(kernel, "cat /dev/shm/marker 2>/dev/null || echo gone").stdout == "gone\n"


def test_file_written_in_tmp_is_seen_by_the_next_cell(kernel: Driver) -> None:
    ok(kernel, "echo written-by-a-cell > /tmp/next-cell-sees-me")
    assert ok(kernel, "cat /tmp/next-cell-sees-me").stdout == "written-by-a-cell\n"


def test_cell_that_changes_nothing_makes_no_layer(kernel: Driver) -> None:
    before = layer_rows(kernel)
    cell = ok(kernel, "echo only output; ls / > /dev/null")
    number = cell.reply["execution_count"]
    assert layer_rows(kernel) == before
    diff = ok(kernel, f"%diff {number}").stdout
    assert f"cell {number} changed nothing on disk" in diff


def test_cell_that_writes_a_file_makes_a_layer(kernel: Driver) -> None:
    before = layer_rows(kernel)
    cell = ok(kernel, "echo layer > /tmp/made-a-layer")
    number = cell.reply["execution_count"]
    after = layer_rows(kernel)
    assert len(after) == len(before) + 1
    assert after[: len(before)] == before
    assert f"cell {number}: echo layer > /tmp/made-a-layer" in after[-1]
    diff = ok(kernel, "%diff").plain
    assert diff.startswith(f"cell {number} changed")
    assert re.search(r"(?m)^A /tmp/made-a-layer\b", diff), diff
    assert ok(kernel, f"%diff {number}").plain == diff


def test_deleted_base_file_stays_deleted(kernel: Driver) -> None:
    ok(kernel, "test -x /usr/bin/rev && echo abc | rev")
    cell = ok(kernel, "rm /usr/bin/rev")
    diff = ok(kernel, f"%diff {cell.reply['execution_count']}").plain
    assert re.search(r"(?m)^D /usr/bin/rev\b", diff), diff
    after = ok(kernel, "test -e /usr/bin/rev && echo present || echo gone; command -v rev || :")
    assert after.stdout == "gone\n"


# -- the shell state carries over --------------------------------------------------------


def test_working_directory(kernel: Driver) -> None:
    start = ok(kernel, "pwd").stdout.strip()
    ok(kernel, "mkdir -p /tmp/wd/sub && cd /tmp/wd/sub")
    try:
        assert ok(kernel, "pwd").stdout == "/tmp/wd/sub\n"
        assert ok(kernel, "cd ..; pwd").stdout == "/tmp/wd\n"
        # OLDPWD is the previous cell's directory, so `cd -` goes back to it
        assert ok(kernel, "pwd; echo $OLDPWD").stdout == "/tmp/wd\n/tmp/wd/sub\n"
        assert ok(kernel, "cd - > /dev/null; pwd").stdout == "/tmp/wd/sub\n"
        assert ok(kernel, "cd -").stdout == "/tmp/wd\n"
    finally:
        ok(kernel, f"cd {start}")


def test_plain_variable_is_not_exported(kernel: Driver) -> None:
    ok(kernel, "PLAIN='a value with  spaces'")
    cell = ok(kernel, """echo "$PLAIN"; bash -c 'echo "${PLAIN-not exported}"'""")
    assert cell.stdout == "a value with  spaces\nnot exported\n"


def test_exported_variable_reaches_child_processes(kernel: Driver) -> None:
    ok(kernel, "export Y=exported-value")
    assert ok(kernel, "bash -c 'echo $Y'; printenv Y").stdout == "exported-value\n" * 2


def test_function(kernel: Driver) -> None:
    ok(kernel, 'greet() { echo "hello, $1"; }')
    assert ok(kernel, "greet world; type -t greet").stdout == "hello, world\nfunction\n"


def test_alias_on_the_first_line_of_the_next_cell(kernel: Driver) -> None:
    ok(kernel, "alias say='echo said:'")
    assert ok(kernel, "say first line\nsay second line").stdout == (
        "said: first line\nsaid: second line\n"
    )


def test_set_and_shopt_options(kernel: Driver) -> None:
    ok(kernel, "set -o pipefail; shopt -s extglob")
    try:
        cell = kernel.run("false | true")
        assert cell.status == "error" and cell.reply["evalue"] == "1", cell.messages
        cell = ok(kernel, "shopt -q extglob && echo extglob on\n"
                          "case abc in @(x|abc)) echo matched ;; esac")  # fmt: skip
        assert cell.stdout == "extglob on\nmatched\n"
    finally:
        ok(kernel, "set +o pipefail; shopt -u extglob")
    ok(kernel, "false | true")
    assert ok(kernel, "shopt -q extglob || echo extglob off").stdout == "extglob off\n"


def test_exit_status_of_the_previous_cell(kernel: Driver) -> None:
    failed(kernel, "false")
    assert ok(kernel, "echo $?").stdout == "1\n"
    ok(kernel, "true")
    assert ok(kernel, "echo $?").stdout == "0\n"


def test_unset_home_persists(kernel: Driver) -> None:
    home = ok(kernel, "echo $HOME").stdout.strip()
    assert home
    ok(kernel, "unset HOME")
    try:
        assert ok(kernel, 'echo "${HOME-unset}"').stdout == "unset\n"
        assert ok(kernel, "bash -c 'echo \"${HOME-unset}\"'").stdout == "unset\n"
    finally:
        ok(kernel, f"export HOME={home}")
    assert ok(kernel, "echo $HOME").stdout == f"{home}\n"


def test_arrays(kernel: Driver) -> None:
    ok(kernel, "arr=(one 'two words' three); declare -A map=([key]='a value')")
    cell = ok(kernel, 'echo "${#arr[@]}|${arr[1]}|${map[key]}|${!map[@]}"')
    assert cell.stdout == "3|two words|a value|key\n"


def test_readonly_variable(kernel: Driver) -> None:
    ok(kernel, "readonly FIXED=constant")
    # As in a script, the assignment fails and bash drops the rest of its line.
    cell = ok(kernel, "FIXED=other; echo same line\necho $FIXED")
    assert "FIXED: readonly variable" in cell.stderr
    assert cell.stdout == "constant\n"
    assert ok(kernel, "echo $FIXED; declare -p FIXED").stdout == (
        'constant\ndeclare -r FIXED="constant"\n'
    )


def test_set_u_persists_until_set_plus_u(kernel: Driver) -> None:
    ok(kernel, "set -u")
    try:
        cell = kernel.run('echo "before"; echo "$NEVER_SET_ANYWHERE"; echo after')
        assert cell.status == "error", cell.messages
        assert "NEVER_SET_ANYWHERE: unbound variable" in cell.stderr
        assert "after" not in cell.stdout
    finally:
        ok(kernel, "set +u")
    assert ok(kernel, 'echo "[$NEVER_SET_ANYWHERE]"').stdout == "[]\n"


def test_exit_in_a_cell(kernel: Driver) -> None:
    ok(kernel, "BEFORE_EXIT=kept")
    cell = failed(kernel, "echo leaving; exit 3; echo never")
    assert cell.reply["ename"] == "ExitStatus"
    assert cell.reply["evalue"] == "3"
    assert cell.stdout == "leaving\n"
    assert ok(kernel, "echo still works: $BEFORE_EXIT").stdout == "still works: kept\n"


def test_syntax_error(kernel: Driver) -> None:
    ok(kernel, "BEFORE_SYNTAX_ERROR=intact; cd /tmp")
    try:
        cell = failed(kernel, "if then")
        assert cell.reply["ename"] == "ExitStatus"
        assert cell.reply["evalue"] == "2"
        assert cell.stdout == ""
        # bash's own message, its line number counted from the cell's first line
        assert re.search(r"line 1: syntax error near unexpected token `then'", cell.stderr)
        cell = ok(kernel, "echo $BEFORE_SYNTAX_ERROR; pwd")
        assert cell.stdout == "intact\n/tmp\n"
    finally:
        ok(kernel, "cd /")


def test_syntax_error_on_a_later_line(kernel: Driver) -> None:
    cell = failed(kernel, "echo one\necho two\ndone")
    assert re.search(r"line 3: syntax error near unexpected token `done'", cell.stderr)
    assert cell.stdout == "one\ntwo\n"  # bash ran what it had parsed


# -- processes end with their cell -----------------------------------------------------


def test_background_process_is_killed_at_the_end_of_the_cell(kernel: Driver) -> None:
    cell = ok(kernel, "sleep 300 &")
    assert re.search(r"killed 1 process\(es\) still running", cell.stderr), cell.stderr
    assert "%%container" in cell.stderr
    assert ok(kernel, "pgrep -x sleep || echo none").stdout == "none\n"
    ps = ok(kernel, "ps -e -o comm=").stdout.split()
    assert "sleep" not in ps


# -- output ------------------------------------------------------------------------------


def test_stdout_and_stderr_are_two_streams(kernel: Driver) -> None:
    cell = ok(kernel, "echo a; echo b >&2; echo c")
    assert cell.stdout == "a\nc\n"
    assert cell.stderr == "b\n"


def test_streams_keep_their_order(kernel: Driver) -> None:
    # The two pipes are read apart: order holds between writes that are not
    # simultaneous (here a sleep apart).
    cell = ok(kernel, "echo a; sleep 0.5; echo b >&2; sleep 0.5; echo c")
    assert streams(cell) == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]


def test_ansi_colours_are_kept(kernel: Driver) -> None:
    cell = ok(kernel, "ls --color=always /")
    assert "\x1b[" in cell.stdout
    assert "\x1b[" not in ok(kernel, "ls /").stdout


def test_output_streams_while_the_cell_runs(kernel: Driver) -> None:
    """'first' reaches the notebook before the cell even prints 'second'."""
    cell = ok(kernel, 'echo first; sleep 2; echo "second $(date +%s.%N)"')
    out = [m for m in cell.messages if m["msg_type"] == "stream"]
    assert [m["content"]["text"].split()[0] for m in out] == ["first", "second"]
    sent_first = out[0]["header"]["date"].timestamp()
    printed_second = float(out[1]["content"]["text"].split()[1])
    assert sent_first < printed_second


def test_invalid_utf8_becomes_replacement_characters(kernel: Driver) -> None:
    cell = ok(kernel, r"printf 'a\xff\xfeb\n'; printf '\xe2\x82' >&2")
    assert cell.stdout == "a\ufffd\ufffdb\n"
    assert cell.stderr == "\ufffd"  # a truncated character at the end of the stream
    assert ok(kernel, "echo 'still answering: é'").stdout == "still answering: é\n"


def test_binary_output(kernel: Driver) -> None:
    cell = ok(kernel, 'head -c 3000 "$(command -v ls)"')
    assert cell.stdout.startswith("\x7fELF")
    assert ok(kernel, "echo alive").stdout == "alive\n"


def test_nul_bytes(kernel: Driver) -> None:
    assert ok(kernel, r"printf 'a\0b\0\n'").stdout == "a\x00b\x00\n"


def test_endless_output_is_cut_and_kept_in_the_log(kernel: Driver, session_root: Path) -> None:
    total = 50_000_000
    cell = ok(kernel, f"yes | head -c {total}", timeout=180)
    assert cell.stdout.startswith("y\ny\n")
    assert len(cell.stdout.encode()) <= CUT_BYTES
    notice = re.search(r"\[output cut: [^\]]*\(`sandbox logs (nb[\w-]+)`\)\]", cell.stderr)
    assert notice, cell.stderr
    name = notice.group(1)
    assert f"[the full output stays in the container's log: sandbox logs {name}]" in cell.stderr
    logs = sandbox_cmd("logs", name, root=session_root, timeout=180)
    assert logs.returncode == 0, logs.stderr.decode()
    # After the output, the log holds the kernel's invisible state record (OSC 7777 ... BEL).
    output, record, rest = logs.stdout.partition(b"\x1b]7777;state;")
    assert len(output) == total
    assert output == b"y\n" * (total // 2)
    assert record and rest.endswith(b"\x07")
    assert ok(kernel, "echo after").stdout == "after\n"


def test_long_line_without_newline(kernel: Driver) -> None:
    cell = ok(kernel, "head -c 100000 /dev/zero | tr '\\0' x")
    assert cell.stdout == "x" * 100_000
    cell = ok(kernel, "head -c 1000000 /dev/zero | tr '\\0' x")
    assert cell.stdout == "x" * CUT_BYTES
    assert "[output cut:" in cell.stderr
    assert ok(kernel, "echo after").stdout == "after\n"


# -- status, errors, limits --------------------------------------------------------------


def test_false_is_an_error(kernel: Driver) -> None:
    cell = failed(kernel, "false")
    assert cell.reply["ename"] == "ExitStatus"
    assert cell.reply["evalue"] == "1"
    assert [m["msg_type"] for m in cell.messages] == ["execute_input", "error"]
    assert "exit status 1" in cell.errors[0]["traceback"][0]


def test_error_stops_the_queued_cells(kernel: Driver) -> None:
    """ipykernel's stop_on_error: a cell queued behind an error is aborted, not run."""
    first = kernel.kc.execute("false", stop_on_error=True)
    second = kernel.kc.execute("echo should-not-run > /tmp/aborted-cell-ran; echo ran")
    assert kernel.collect(first).status == "error"
    aborted = kernel.collect(second)
    assert aborted.status == "aborted"
    assert aborted.messages == []
    check = ok(kernel, "cat /tmp/aborted-cell-ran 2>/dev/null || echo not run")
    assert check.stdout == "not run\n"


def test_error_without_stop_on_error_runs_the_queued_cells(kernel: Driver) -> None:
    first = kernel.kc.execute("false", stop_on_error=False)
    second = kernel.kc.execute("echo ran")
    assert kernel.collect(first).status == "error"
    then = kernel.collect(second)
    assert then.status == "ok"
    assert then.stdout == "ran\n"


def test_out_of_memory(kernel: Driver) -> None:
    assert "memory=32MiB" in ok(kernel, "%limits memory=32m").stdout
    try:
        cell = failed(kernel, "x=$(head -c 100m /dev/zero | tr '\\0' a); echo survived",
                      timeout=120)  # fmt: skip
        assert cell.reply["ename"] == "ExitStatus"
        text = "\n".join(cell.errors[0]["traceback"])
        assert "out of memory" in text
        assert "%limits" in text
        assert "memory=32MiB" in text
        assert "survived" not in cell.stdout
    finally:
        ok(kernel, "%limits memory=default pids=default")
    assert ok(kernel, "echo recovered").stdout == "recovered\n"


def test_too_many_processes(kernel: Driver) -> None:
    assert "pids=16" in ok(kernel, "%limits pids=16").stdout
    try:
        cell = kernel.run("for i in $(seq 40); do sleep 1 & done; wait", timeout=120)
        said = "\n".join([cell.stderr, *(line for e in cell.errors for line in e["traceback"])])
        assert "too many processes" in said, cell.messages
        assert "%limits pids=" in said
    finally:
        ok(kernel, "%limits memory=default pids=default")
    assert ok(kernel, "%limits").stdout == "memory=512MiB  cpus=unlimited  pids=512\n"
    assert ok(kernel, "echo recovered").stdout == "recovered\n"
