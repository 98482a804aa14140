"""The notebook in a real JupyterLab and a real browser: ui-tests/ (Galata, Playwright).

This runs ``jlpm playwright test`` in ui-tests/ (its specs are
ui-tests/tests/*.spec.ts): Playwright starts a JupyterLab server of its own
(ui-tests/playwright.config.js, ui-tests/jupyter_server_test_config.py) and
drives Debian's chromium (/usr/bin/chromium) against it: the launcher card,
a notebook on the "Bash (sandbox)" kernel, its cells and its visuals.

The kernel uses a temp store (SANDBOX_ROOT) and the server a temp dir
(SANDBOX_UI_TMP), both made here; the kernel's client starts the store's
daemon, which this test stops. Every process of the run carries
SANDBOX_UI_TMP in its environment, which is how the test checks that
JupyterLab, its kernels and the browser are all gone afterwards.

The screenshots of each step are copied to test-artifacts/browser/ (with the
failure screenshots of a failed run); the whole report is in
ui-tests/playwright-report/ and ui-tests/test-results/.

Set-up: ``scripts/setup.sh --test`` installs chromium (setup/apt-packages-test.txt)
and ui-tests/node_modules.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TEMP_PREFIX, daemon_pid, sandbox_cmd, stop_daemon

REPO = Path(__file__).resolve().parents[2]
UI_TESTS = REPO / "ui-tests"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
JLPM = REPO / ".venv" / "bin" / "jlpm"
EXTENSION_BUILD = REPO / "kernel" / "sandbox_kernel" / "labextension" / "package.json"
RUN_TIMEOUT = 600  # s, a hang guard for the whole Playwright run (it takes about a minute)
GONE_TIMEOUT = 60  # s for the server's kernels to end once Playwright has stopped the server
SCREENSHOT = re.compile(r"^\d\d-[\w-]+\.png$")  # the specs' step screenshots, "03-cell-output.png"

NO_CHROMIUM = "no /usr/bin/chromium (apt-get install chromium; setup/apt-packages-test.txt has it)"
NO_NODE = "no node (apt-get install nodejs): Playwright runs on it"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(RUN_TIMEOUT + 3 * GONE_TIMEOUT),  # the run, then the clean-up
    pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM),
    pytest.mark.skipif(shutil.which("node") is None, reason=NO_NODE),
]


def test_jupyterlab_end_to_end(request: pytest.FixtureRequest) -> None:
    if not (UI_TESTS / "node_modules" / "@jupyterlab" / "galata").is_dir():
        pytest.fail("ui-tests/node_modules is missing: run scripts/setup.sh --test "
                    "(it runs `jlpm install` in ui-tests/)")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "ui-"))
    store, lab = tmp / "store", tmp / "lab"
    lab.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "SANDBOX_HOST"},  # no other daemon
        "SANDBOX_ROOT": str(store),
        "SANDBOX_UI_TMP": str(lab),
        "SANDBOX_UI_PORT": str(_free_port()),
        # Built by scripts/setup.sh: its renderers must draw the visuals (not the fallback HTML).
        "SANDBOX_UI_RENDERERS": "extension" if EXTENSION_BUILD.exists() else "auto",
        "CI": "true",
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
    }
    problems: list[str] = []
    try:
        code, output = _run_playwright(env)
        if code != 0:
            problems.append(f"`jlpm playwright test` exited {code}:\n{output[-60000:]}")
        # Playwright stopped the server (SIGTERM), which shut its kernels down;
        # only the store's daemon (and its zygote) may still run.
        left = _wait_gone(lab, but=daemon_pid(store))
        if left:
            problems.append(f"still running after the run: {left}")
        if daemon_pid(store) is not None:
            # Each kernel removes its containers when it shuts down (Session.close).
            ps = sandbox_cmd("ps", "-a", root=store)
            if ps.returncode != 0 or len(ps.stdout.decode().strip().splitlines()) > 1:
                problems.append("the kernels left containers in their store (`sandbox ps -a`):\n"
                                + ps.stdout.decode() + ps.stderr.decode())  # fmt: skip
    finally:
        try:
            _kill(_wait_gone(lab, but=daemon_pid(store), timeout=0))  # reported above
            stop_daemon(store)
            left = _wait_gone(lab, but=None, timeout=10)
            if left:
                problems.append(f"still running after the daemon's stop: {left}")
                _kill(left)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    shots = _collect_screenshots()
    request.node.user_properties.append(("screenshots", str(ARTIFACTS)))
    print(f"screenshots ({len(shots)}) in {ARTIFACTS}: {', '.join(sorted(shots))}")
    assert not problems, "\n\n".join(problems)
    assert shots, f"the specs took no screenshot (looked in {UI_TESTS / 'test-results'})"


def _free_port() -> int:
    """A TCP port free now on localhost (the server's; 8888 may be a user's lab)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_playwright(env: dict[str, str]) -> tuple[int, str]:
    """Run the specs; returns the exit code and the output (stdout and stderr)."""
    proc = subprocess.Popen([str(JLPM), "playwright", "test"], cwd=UI_TESTS, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # Playwright stops its server on SIGTERM
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return -1, f"[timed out after {RUN_TIMEOUT} s]\n" + out.decode(errors="replace")
    return proc.returncode, out.decode(errors="replace")


def _ours(lab: Path) -> dict[int, str]:
    """The processes of this run (their environment has our SANDBOX_UI_TMP): PID -> command."""
    marker = f"SANDBOX_UI_TMP={lab}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:
            continue  # gone, or a kernel thread
    return found


def _wait_gone(lab: Path, *, but: int | None, timeout: float = GONE_TIMEOUT) -> dict[int, str]:
    """Wait for the processes of this run to end, all but ``but`` (the daemon) and its
    children (its zygote); the ones left after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        spared = _tree(but) if but is not None else set()
        left = {pid: cmd for pid, cmd in _ours(lab).items() if pid not in spared}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    parents = {}
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{child}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        parents[int(child)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    tree, grew = {pid}, True
    while grew:
        more = {c for c, p in parents.items() if p in tree} - tree
        grew = bool(more)
        tree |= more
    return tree


def _kill(procs: dict[int, str]) -> None:
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _collect_screenshots() -> list[str]:
    """Copy the step screenshots (and any failure screenshot) to ARTIFACTS; their names."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    names = []
    for png in sorted((UI_TESTS / "test-results").glob("*/*.png")):
        name = png.name if SCREENSHOT.match(png.name) else f"{png.parent.name}-{png.name}"
        shutil.copyfile(png, ARTIFACTS / name)
        names.append(name)
    return names
