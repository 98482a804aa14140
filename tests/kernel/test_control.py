"""Interrupt, restart, shutdown and input of the real "Bash (sandbox)" kernel.

Every test drives the installed kernel over jupyter_client; what became of
its containers and images is read from the session's daemon through
docker-py (the daemon speaks the Docker API on ``<store>/sandboxd.sock``).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import time
import uuid
from typing import Any

import docker
import pytest

from .conftest import Cell, Driver, own_kernel

SESSION_LABEL = "sandbox.kernel.session"
HANG_GUARD = 60.0  # seconds something may take to happen (a hang guard, not a timing)


# -- helpers ------------------------------------------------------------------------------


def session_containers(api: docker.DockerClient, sid: str | None = None, *,
                       running_only: bool = False) -> list[Any]:  # fmt: skip
    """The containers labelled as a kernel session's (``sid``'s, or any kernel's)."""
    found = []
    for c in api.containers.list(all=not running_only):
        label = (c.labels or {}).get(SESSION_LABEL)
        if label is not None and (sid is None or label == sid):
            found.append(c)
    return found


def running_sid(api: docker.DockerClient) -> str:
    """The session label of the one kernel container running now."""
    running = session_containers(api, running_only=True)
    assert len(running) == 1, [(c.name, c.labels) for c in running]
    return str(running[0].labels[SESSION_LABEL])


def image_ids(api: docker.DockerClient) -> set[str]:
    return {str(i.id) for i in api.images.list(all=True)}


def wait_for_stdout(driver: Driver, msg_id: str, text: str) -> list[dict[str, Any]]:
    """The iopub messages of ``msg_id`` up to the stdout that contains ``text``."""
    seen: list[dict[str, Any]] = []
    out = ""
    messages = driver.iopub(msg_id, HANG_GUARD)
    try:
        while text not in out:
            msg = next(messages)
            if msg["msg_type"] == "status":
                assert msg["content"]["execution_state"] != "idle", f"the cell ended: {seen}"
                continue
            seen.append(msg)
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out += msg["content"]["text"]
    except queue.Empty:
        raise AssertionError(f"no {text!r} on stdout; got {seen}") from None
    return seen


def interrupt_after(driver: Driver, code: str, marker: str) -> Cell:
    """Run ``code``, interrupt it once ``marker`` is on stdout, return the whole cell."""
    msg_id = driver.kc.execute(code)
    seen = wait_for_stdout(driver, msg_id, marker)
    driver.km.interrupt_kernel()
    cell = driver.collect(msg_id, timeout=HANG_GUARD)
    cell.messages[:0] = seen
    return cell


def eventually(check: Any, what: str) -> None:
    """Wait (a hang guard) until ``check()`` is true."""
    deadline = time.monotonic() + HANG_GUARD
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# -- interrupt ----------------------------------------------------------------------------


def test_interrupt_stops_the_cell_and_keeps_its_earlier_state(
    kernel: Driver, api: docker.DockerClient
) -> None:
    msg_id = kernel.kc.execute("cd /tmp; interrupted_var=set; echo start; sleep 60; echo never")
    seen = wait_for_stdout(kernel, msg_id, "start")
    sid = running_sid(api)  # the cell's container runs now
    kernel.km.interrupt_kernel()
    cell = kernel.collect(msg_id, timeout=HANG_GUARD)
    cell.messages[:0] = seen

    assert cell.status == "error"
    assert cell.reply["ename"] == "KeyboardInterrupt"
    assert [e["ename"] for e in cell.errors] == ["KeyboardInterrupt"]
    assert "start" in cell.stdout
    assert "never" not in cell.stdout
    assert not session_containers(api, sid, running_only=True)

    after = kernel.run('pwd; echo "var=$interrupted_var"')
    assert after.status == "ok", after.messages
    assert after.stdout == "/tmp\nvar=set\n"
    kernel.run("cd /")


def test_interrupt_kills_a_cell_that_ignores_sigint(
    kernel: Driver, api: docker.DockerClient
) -> None:
    code = "trap '' INT; echo looping; while :; do sleep 0.1; done; echo never"
    msg_id = kernel.kc.execute(code)
    seen = wait_for_stdout(kernel, msg_id, "looping")
    sid = running_sid(api)
    kernel.km.interrupt_kernel()
    cell = kernel.collect(msg_id, timeout=HANG_GUARD)
    cell.messages[:0] = seen

    assert cell.status == "error"
    assert cell.reply["ename"] == "KeyboardInterrupt"
    assert "never" not in cell.stdout
    assert not session_containers(api, sid, running_only=True)
    after = kernel.run("echo alive")
    assert after.status == "ok", after.messages
    assert after.stdout == "alive\n"


def test_interrupt_while_waiting_for_input(kernel: Driver, api: docker.DockerClient) -> None:
    """A cell blocked in `read` (its input box open) is interrupted like any other."""
    msg_id = kernel.kc.execute("echo asking; read -r answer; echo never", allow_stdin=True)
    seen = wait_for_stdout(kernel, msg_id, "asking")
    request = kernel.kc.get_stdin_msg(timeout=HANG_GUARD)
    assert request["msg_type"] == "input_request"
    sid = running_sid(api)
    kernel.km.interrupt_kernel()
    cell = kernel.collect(msg_id, timeout=HANG_GUARD)
    cell.messages[:0] = seen
    assert cell.reply["ename"] == "KeyboardInterrupt"
    assert "never" not in cell.stdout
    assert not session_containers(api, sid, running_only=True)
    assert kernel.run("echo alive").stdout == "alive\n"


def test_no_kernel_container_runs_after_interrupts(
    kernel: Driver, api: docker.DockerClient
) -> None:
    for code in ("echo go; sleep 30", "trap '' INT TERM; echo go; sleep 30 & wait; sleep 30"):
        cell = interrupt_after(kernel, code, "go")
        assert cell.reply["ename"] == "KeyboardInterrupt", cell.messages
    eventually(lambda: not session_containers(api, running_only=True),
               "a kernel container still runs after the interrupts")  # fmt: skip


# -- restart and shutdown -----------------------------------------------------------------


def _fill_session(driver: Driver, web: str) -> None:
    """A layer, a %%container with a background process, and a kept (cut) container."""
    cell = driver.run("echo before > /restart-file")
    assert cell.status == "ok", cell.messages
    cell = driver.run(f"%%container {web}\nsleep 1000 &\necho started")
    assert cell.status == "ok", cell.messages
    cell = driver.run("seq 20000")
    assert "[output cut" in cell.stderr, cell.stderr
    assert "sandbox logs nb" in cell.stderr


def _session_of(api: docker.DockerClient, web: str) -> str:
    return str(api.containers.get(web).labels[SESSION_LABEL])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "shutdown"])
def test_restart_and_shutdown_remove_the_session(api: docker.DockerClient, how: str) -> None:
    web = f"web-{uuid.uuid4().hex[:8]}"
    before = image_ids(api)
    with own_kernel() as driver:
        _fill_session(driver, web)
        sid = _session_of(api, web)
        mine = session_containers(api, sid)
        names = {c.name for c in mine}
        assert web in names and any(n.startswith(f"nb{sid}-") for n in names), names
        assert api.containers.get(web).status == "running"
        committed = image_ids(api) - before
        assert committed, "the cell that wrote a file committed no image"

        if how == "restart":
            driver.km.restart_kernel(now=False)
            driver.kc.wait_for_ready(timeout=HANG_GUARD)
        else:
            driver.km.shutdown_kernel(now=False)

        assert not session_containers(api, sid), [c.name for c in session_containers(api, sid)]
        assert not committed & image_ids(api), "the session's images outlived it"

        if how == "restart":
            cell = driver.run("cat /restart-file")
            assert cell.status == "error"
            assert "No such file" in cell.stderr
            assert "before" not in cell.stdout
            cell = driver.run(f"%%container {web}\ntest -e /restart-file || echo fresh")
            assert cell.stdout.endswith("fresh\n"), cell.messages
            assert driver.run(f"%rm {web}").status == "ok"


@pytest.mark.slow
def test_restart_while_a_cell_runs(api: docker.DockerClient) -> None:
    """The restart button during a long cell: its container goes too."""
    with own_kernel() as driver:
        msg_id = driver.kc.execute("echo go > /running-file; echo go; sleep 100")
        wait_for_stdout(driver, msg_id, "go")
        sid = running_sid(api)
        driver.km.restart_kernel(now=False)
        driver.kc.wait_for_ready(timeout=HANG_GUARD)
        assert not session_containers(api, sid), [c.name for c in session_containers(api, sid)]
        cell = driver.run("test -e /running-file || echo fresh")
        assert cell.status == "ok", cell.messages
        assert cell.stdout == "fresh\n"


@pytest.mark.slow
def test_shutdown_keeps_the_images_the_notebook_named(api: docker.DockerClient) -> None:
    """%commit NAME outlives the kernel (the session's other images do not)."""
    name = f"kept-{uuid.uuid4().hex[:8]}:1"
    before = image_ids(api)
    try:
        with own_kernel() as driver:
            assert driver.run("echo one > /one").status == "ok"
            assert driver.run("echo two > /two").status == "ok"
            cell = driver.run(f"%commit {name}")
            assert cell.status == "ok", cell.messages
            committed = image_ids(api) - before
            assert len(committed) == 2, committed
            driver.km.shutdown_kernel(now=False)
        image = api.images.get(name)
        assert name in image.tags
        assert image_ids(api) - before == {image.id}
        out = api.containers.run(name, ["cat", "/one", "/two"], remove=True)
        assert out == b"one\ntwo\n"
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            api.images.remove(name)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "shutdown_now"])
def test_a_killed_kernel_leaves_no_running_container(api: docker.DockerClient, how: str) -> None:
    """SIGKILL from outside (the OOM killer, say), or Jupyter's forced shutdown (now=True)."""
    with own_kernel() as driver:
        msg_id = driver.kc.execute("echo go; sleep 100")
        wait_for_stdout(driver, msg_id, "go")
        sid = running_sid(api)
        if how == "sigkill":
            driver.km.signal_kernel(signal.SIGKILL)
            eventually(lambda: not driver.km.is_alive(), "the kernel survived SIGKILL")
            driver.km.shutdown_kernel(now=True)  # only reaps it and frees its ports
        else:
            driver.km.shutdown_kernel(now=True)
        eventually(
            lambda: not session_containers(api, sid, running_only=True),
            "the killed kernel's cell still runs",
        )
    for c in session_containers(api, sid):  # a killed kernel cleans nothing up
        c.remove(force=True)


# -- input --------------------------------------------------------------------------------


def run_with_input(driver: Driver, code: str, answers: list[str]) -> tuple[Cell, list[Any]]:
    """Run ``code`` with stdin allowed, answer its input requests in turn."""
    msg_id = driver.kc.execute(code, allow_stdin=True)
    requests = []
    for answer in answers:
        request = driver.kc.get_stdin_msg(timeout=HANG_GUARD)
        assert request["parent_header"]["msg_id"] == msg_id
        requests.append(request)
        driver.kc.input(answer)
    return driver.collect(msg_id, timeout=HANG_GUARD), requests


def test_read_asks_the_frontend(kernel: Driver) -> None:
    cell, requests = run_with_input(kernel, 'read -r name; echo "hello $name"', ["Ada"])
    assert [r["msg_type"] for r in requests] == ["input_request"]
    assert requests[0]["content"]["password"] is False
    assert cell.status == "ok", cell.messages
    assert cell.stdout == "hello Ada\n"
    with pytest.raises(queue.Empty):
        kernel.kc.get_stdin_msg(timeout=0.5)


def test_two_reads_make_two_requests(kernel: Driver) -> None:
    code = 'read -r first; echo "got $first"; read -r second; echo "$first and $second"'
    cell, requests = run_with_input(kernel, code, ["one", "two words"])
    assert len(requests) == 2
    assert cell.status == "ok", cell.messages
    assert cell.stdout == "got one\none and two words\n"


def test_ctrl_d_ends_the_input(kernel: Driver) -> None:
    code = 'cat; echo "cat ended: $?"'
    cell, requests = run_with_input(kernel, code, ["line one", "line two", "\x04"])
    assert len(requests) == 3
    assert cell.status == "ok", cell.messages
    assert cell.stdout == "line one\nline two\ncat ended: 0\n"


def test_input_without_allow_stdin_gets_eof(kernel: Driver) -> None:
    cell = kernel.run('read -r name; echo "status $?"; read -r again', allow_stdin=False)
    assert "does not accept input" in cell.stderr
    assert cell.stdout == "status 1\n"
    assert cell.status == "error"
    assert cell.reply["ename"] == "ExitStatus"
    assert cell.reply["evalue"] == "1"
    with pytest.raises(queue.Empty):
        kernel.kc.get_stdin_msg(timeout=0.5)
