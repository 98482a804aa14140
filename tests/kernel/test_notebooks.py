"""The teaching notebooks in notebooks/, run top to bottom on the real kernel.

Each notebook is executed the way *Run All* would run it in JupyterLab
(nbclient, one kernel per notebook, the kernel inheriting SANDBOX_ROOT from
`session_root`), then:

- no cell may fail: a failed cell stops *Run All* for a student;
- after its last cell, the notebook has removed (``%rm``) every ``%%container``
  container it made; once the kernel has shut down, no container of its
  session is left in the daemon, nor any image it committed, nor a network;
- every link to a published port that a cell shows (``%%container NAME -p``)
  opens, fetched from this process while the kernel still runs;
- the saved notebook carries no outputs and names the sandbox kernel;
- for each lesson, the cells found by a tag in their metadata (``check-ps``,
  ``check-export``...) show the facts the lesson's text promises: stable facts
  only, never PIDs, times, IDs or ports.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from .conftest import Streams

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SESSION_LABEL = "sandbox.kernel.session"
FOREGROUND_LABEL = "sandbox.foreground"
KERNEL_NAME = "sandbox"
PUBLISHED = re.compile(r"published at (http://127\.0\.0\.1:\d+/)")
HANG_GUARD = 60.0  # seconds a published server may take to answer (not a timing)


@dataclass
class Run:
    """An executed notebook and what its kernel left behind."""

    nb: NotebookNode
    failed: list[str] = field(default_factory=list)  # cells whose reply was an error
    long_lived: list[str] = field(default_factory=list)  # %%container ones after the last cell
    containers_left: list[str] = field(default_factory=list)
    images_left: list[str] = field(default_factory=list)
    networks_left: list[str] = field(default_factory=list)
    opened: dict[str, bytes] = field(default_factory=dict)  # published link -> its page


def _session_containers(client: docker.DockerClient, *,
                        long_lived: bool = False) -> dict[str, str]:  # fmt: skip
    """Containers of kernel sessions (only ``%%container`` ones, if ``long_lived``).

    A cell's own container is labelled as a foreground one; the kernel removes
    it just after the cell, a ``%%container`` one only on ``%rm`` or shutdown.
    """
    found = {}
    for c in client.containers.list(all=True):
        labels = c.labels or {}
        if SESSION_LABEL in labels and not (long_lived and FOREGROUND_LABEL in labels):
            found[c.id] = c.name
    return found


def _images(client: docker.DockerClient) -> set[str]:
    return {image.id for image in client.images.list(all=True)}


def _networks(client: docker.DockerClient) -> dict[str, str]:
    return {str(n.id): str(n.name) for n in client.networks.list()}


def _open(url: str) -> bytes:
    """GET a published link from this process (the server may take a moment to listen)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            with urllib.request.urlopen(url, timeout=HANG_GUARD) as reply:
                return bytes(reply.read())
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _published_links(cell: NotebookNode) -> list[str]:
    return [url for out in cell.get("outputs", []) if out.output_type == "display_data"
            for url in PUBLISHED.findall(str(out.data.get("text/plain", "")))]  # fmt: skip


def execute(path: Path, client: docker.DockerClient) -> Run:
    """Run ``path`` top to bottom in a new kernel, which is shut down afterwards."""
    nb = nbformat.read(path, as_version=4)
    run = Run(nb)
    last = max((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), default=-1)
    containers, images = _session_containers(client), _images(client)
    networks = _networks(client)

    def on_cell_executed(cell: NotebookNode, cell_index: int,
                         execute_reply: dict[str, Any]) -> None:  # fmt: skip
        if execute_reply is None or execute_reply["content"]["status"] != "ok":
            run.failed.append(f"cell {cell_index}: {cell.source[:80]!r}")
        for url in _published_links(cell):  # open it as a browser would, while it runs
            run.opened[url] = _open(url)
        if cell_index == last:  # the kernel still runs: has the notebook %rm'd its containers?
            run.long_lived = sorted(name for cid, name in
                                    _session_containers(client, long_lived=True).items()
                                    if cid not in containers)  # fmt: skip

    # allow_errors=True: every failing cell is reported below, not only the first.
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=120, allow_errors=True,
                   on_cell_executed=on_cell_executed,
                   resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}).execute()  # fmt: skip
    # NotebookClient.execute shut the kernel down; the kernel removes its
    # containers and images when it does.
    run.containers_left = sorted(
        name for cid, name in _session_containers(client).items() if cid not in containers
    )
    run.images_left = sorted(_images(client) - images)
    run.networks_left = sorted(name for nid, name in _networks(client).items()
                               if nid not in networks)  # fmt: skip
    return run


@pytest.fixture(scope="module")
def runs(session_root: Path) -> Iterator[Callable[[Path], Run]]:
    """``runs(path)``: the notebook executed once per module (later calls reuse the run).

    Call it from a test or a function-scoped fixture: then the execution falls
    inside the test's `no_leaks` check (mounts, cgroups, processes...).
    """
    client = docker.DockerClient(base_url=f"unix://{session_root / 'sandboxd.sock'}", timeout=60)
    done: dict[Path, Run | BaseException] = {}

    def run(path: Path) -> Run:
        if path not in done:
            try:
                done[path] = execute(path, client)
            except Exception as exc:  # a broken run fails every test that needs it
                done[path] = exc
        result = done[path]
        if isinstance(result, BaseException):
            raise result
        return result

    try:
        yield run
    finally:
        client.close()


def _errors(nb: NotebookNode) -> list[str]:
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"cell {index} {cell.source[:60]!r}: {out.ename}: {out.evalue}")
    return found


# -- every notebook -----------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_saved_notebook_is_clean(path: Path) -> None:
    """Saved without outputs, valid, and on the sandbox kernel."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    spec = nb.metadata.get("kernelspec", {})
    assert (spec.get("name"), spec.get("display_name"), spec.get("language")) == (
        KERNEL_NAME, "Bash (sandbox)", "bash")  # fmt: skip
    assert nb.metadata.get("language_info", {}).get("name") == "bash"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]  # fmt: skip
    assert not dirty, f"cells saved with outputs (clear them): {dirty}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_runs_top_to_bottom(path: Path, runs: Callable[[Path], Run]) -> None:
    """Run All completes, and the kernel's shutdown leaves nothing behind."""
    run = runs(path)
    errors = _errors(run.nb)
    assert not errors, "cells with an error output:\n" + "\n".join(errors)
    assert not run.failed, f"cells that failed: {run.failed}"
    assert not run.long_lived, f"%%container containers the notebook did not %rm: {run.long_lived}"
    assert not run.containers_left, f"containers left after shutdown: {run.containers_left}"
    assert not run.images_left, f"images left after shutdown: {run.images_left}"
    assert not run.networks_left, f"networks left after shutdown: {run.networks_left}"


# -- 01-shell-basics ----------------------------------------------------------------------

SHELL_BASICS = NOTEBOOKS_DIR / "01-shell-basics.ipynb"


@dataclass
class Out(Streams):
    """The outputs of one executed cell."""

    cell: NotebookNode

    def text(self, name: str) -> str:
        return "".join(o.text for o in self.cell.outputs
                       if o.output_type == "stream" and o.name == name)  # fmt: skip

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def plain(self) -> str:
        """The text/plain of the cell's one display (%layers and %diff show a picture)."""
        (text,) = [o.data["text/plain"] for o in self.cell.outputs
                   if o.output_type == "display_data" and "text/plain" in o.data]  # fmt: skip
        return str(text)

    @property
    def count(self) -> int:
        return int(self.cell.execution_count)


def tagged(nb: NotebookNode) -> Callable[[str], Out]:
    """``find("check-ps")``: the one executed cell of ``nb`` with that tag."""

    def find(tag: str) -> Out:
        found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
        assert len(found) == 1, f"{len(found)} cells tagged {tag!r}"
        return Out(found[0])

    return find


@pytest.fixture
def cells(runs: Callable[[Path], Run]) -> Callable[[str], Out]:
    """``cells("check-ps")``: the one executed cell of 01-shell-basics with that tag.

    Function-scoped, so that the first test to need the run executes it inside
    the `no_leaks` window (the run itself is cached for the module).
    """
    return tagged(runs(SHELL_BASICS).nb)


def test_first_cell_says_hello_as_root(cells: Callable[[str], Out]) -> None:
    assert cells("check-hello").lines == ["Hello from the sandbox!", "root"]


def test_files_and_directories(cells: Callable[[str], Out]) -> None:
    assert cells("check-cd").lines == ["/root/shell-basics"]
    files = cells("check-files").lines
    assert files[0] == "Hello, shell!"
    listing = {line.split()[-1]: line.split() for line in files[2:]}  # after `total N`
    assert set(listing) == {"empty.txt", "hello.txt", "notes"}
    assert listing["empty.txt"][4] == "0" and listing["hello.txt"][4] == "14"
    assert listing["notes"][0].startswith("d")
    assert cells("check-paths").lines == ["Hello, shell!"] * 3 + ["shell-basics"]
    plain, _, all_ = cells("check-hidden").stdout.partition("--- and with ls -la:")
    assert ".hidden" not in plain and "hello.txt" in plain
    assert {".hidden", ".", ".."} <= {line.split()[-1] for line in all_.splitlines()[2:]}
    assert cells("check-tree").stdout == (
        ".:\nhello.txt\nnotes\n\n./notes:\ndrafts\nhello.txt\n\n./notes/drafts:\nempty.txt\n"
    )


def test_redirection(cells: Callable[[str], Out]) -> None:
    redirect = cells("check-redirect")
    assert redirect.lines[:2] == ["out.txt has:", "hello.txt"]
    assert redirect.lines[2] == "err.txt has:"
    assert "no-such-file" in redirect.lines[3] and "No such file" in redirect.lines[3]
    assert redirect.stderr == "", "both streams went to files"
    assert cells("check-append").lines == ["one", "two", "three"]
    both = cells("check-both")
    assert "hello.txt" in both.lines and any("No such file" in line for line in both.lines)
    assert both.stderr == ""


def test_pipes(cells: Callable[[str], Out]) -> None:
    assert cells("check-votes").lines == ["10 votes.txt"]
    assert cells("check-head-tail").lines == ["banana", "Apple", "cherry", "...", "cherry",
                                              "banana"]  # fmt: skip
    assert cells("check-grep").lines == ["banana"] * 3 + ["3", "4"]
    counts = [tuple(line.split()) for line in cells("check-pipeline").lines]
    assert counts == [("4", "banana"), ("3", "apple"), ("2", "cherry"), ("1", "kiwi")]


def test_variables(cells: Callable[[str], Out]) -> None:
    assert cells("check-quotes").lines == ["Hello, Ada Lovelace", "Hello, $name"]
    assert cells("check-split").lines == ["<Ada>", "<Lovelace>", "<Ada Lovelace>"]
    # A child shell sees the exported variable, not the plain one.
    assert cells("check-export").lines == ["the child sees color=[] and SIZE=[large]", "large"]
    assert cells("check-subst").lines == ["There were 10 votes.",
                                          "This container's host name is sandbox."]  # fmt: skip
    assert cells("check-status").lines == [
        "true exited with 0",
        "false exited with 1",
        "grep -q mango exited with 1: no line matched",
        "grep -q kiwi exited with 0: a line matched",
    ]


def test_processes_in_a_pid_namespace(cells: Callable[[str], Out]) -> None:
    header, *rows = cells("check-ps").lines
    assert header.split()[:3] == ["UID", "PID", "PPID"]
    procs = {int(row.split()[1]): row for row in rows}
    assert 1 in procs and "tini" in procs[1], rows
    assert len(rows) == 3, f"only tini, the cell's bash and ps: {rows}"
    assert any(row.split()[7] == "bash" for row in rows) and any(
        row.split()[7:] == ["ps", "-ef"] for row in rows), rows  # fmt: skip
    assert cells("check-pid").lines[1] == "this container's host name is sandbox"


def test_background_processes_end_with_their_cell(cells: Callable[[str], Out]) -> None:
    killed = cells("check-killed")
    assert killed.lines[0].startswith("started sleep in the background, PID ")
    assert re.fullmatch(r"\[1\]\+\s+Running\s+sleep 300 &", killed.lines[1]), killed.lines
    assert any(row.split()[7:] == ["sleep", "300"] for row in killed.lines[2:]), killed.lines
    # The kernel names what it killed (`sleep (3)`; the name, read from /proc when the
    # cell ends, is `bash` if the forked job has not yet exec'd sleep).
    assert re.search(r"^\[killed 1 process\(es\) still running at the end of the cell: "
                     r"\w+ \(\d+\)\. ", killed.stderr), killed.stderr  # fmt: skip
    assert cells("check-gone").lines == ["no sleep process is running"]


def test_container_keeps_its_processes_until_rm(cells: Callable[[str], Out]) -> None:
    start = cells("check-container-start")
    assert "[started the container ticker" in start.stderr
    assert "[killed" not in start.stderr
    assert start.lines[0].startswith("the ticker runs with PID ")
    again = cells("check-container-again")
    assert again.lines[0] == "the ticker is still running", again.stdout
    logged = re.fullmatch(r"lines in the log so far: (\d+)", again.lines[1])
    assert logged and int(logged.group(1)) >= 1, again.lines
    assert "[killed" not in again.stderr and "[started" not in again.stderr
    assert cells("check-container-fs").lines == ["no /tmp/ticks.log here"]
    assert cells("check-rm").lines == ["removed ticker"]


def test_layers_and_diff(cells: Callable[[str], Out]) -> None:
    layers = cells("check-layers").plain
    rows = re.findall(r"(?m)^\s*(\d+)\s+\S+\s+cell (\d+): (.*)$", layers)
    made_by = {int(cell): first for _, cell, first in rows}
    layer_of = {int(cell): int(number) for number, cell, _ in rows}
    # Each cell that changed the disk is a layer, named by its first line (a cell
    # that only made directories too)...
    for tag, first in [("check-cd", "cd ~"), ("check-files", "touch empty.txt"),
                       ("check-votes", "cat > votes.txt <<'EOF'")]:  # fmt: skip
        assert made_by.get(cells(tag).count) == first, layers
    # ...and cells that only read are not.
    for tag in ("check-hello", "check-ps", "check-pipeline", "check-killed"):
        assert cells(tag).count not in made_by, (tag, layers)
    assert [number for number, _, _ in rows] == [str(i) for i in range(1, len(rows) + 1)]

    diff = cells("check-diff").plain.splitlines()
    assert diff[0].startswith(f"cell {cells('check-diff-cell').count} changed ")
    kinds = {line.split()[1]: line for line in diff[1:]}
    shell_basics = "/root/shell-basics"
    # hello.txt was made by the check-files cell, notes/hello.txt by check-tree: %diff
    # numbers their layers as %layers does.
    assert kinds[f"{shell_basics}/hello.txt"].startswith("C "), diff
    assert f"copied up from layer {layer_of[cells('check-files').count]})" in kinds[
        f"{shell_basics}/hello.txt"], (diff, layers)  # fmt: skip
    assert kinds[f"{shell_basics}/notes/hello.txt"].startswith("D "), diff
    assert f"hides layer {layer_of[cells('check-tree').count]}'s copy" in kinds[
        f"{shell_basics}/notes/hello.txt"], (diff, layers)  # fmt: skip
    assert kinds[f"{shell_basics}/notes/todo.txt"].startswith("A "), diff


def test_shell_state_carries_over(cells: Callable[[str], Out]) -> None:
    assert cells("check-shell-state").lines == [
        "/root/shell-basics", "name=Ada Lovelace color=blue SIZE=large"]  # fmt: skip
    assert cells("check-functions").lines == [
        "Hello, world!", "Hello, class!", "ll is aliased to `ls -l'"]  # fmt: skip
    assert "%layers" in cells("check-help").stdout


def test_exercise_is_checked(cells: Callable[[str], Out]) -> None:
    assert cells("exercise-setup").lines[0] == "The shell reads a line,"
    assert cells("exercise").lines == [
        "No answer yet: set the variable answer, then run check_answer again."]  # fmt: skip
    assert cells("exercise-solution").lines == ["Correct: poem.txt has 20 words."]


# -- 02-networks --------------------------------------------------------------------------

NETWORKS = NOTEBOOKS_DIR / "02-networks.ipynb"
PAGE = b"<h1>Hello from the web container!</h1>\n"


@pytest.fixture
def net_cells(runs: Callable[[Path], Run]) -> Callable[[str], Out]:
    """``net_cells("check-ping")``: the one executed cell of 02-networks with that tag."""
    return tagged(runs(NETWORKS).nb)


def _interfaces(lines: list[str]) -> dict[str, list[str]]:
    """``ip -br addr`` lines: each interface (``eth0@if3`` is eth0) and its IPv4 addresses."""
    found = {}
    for line in lines:
        name, _, *addresses = line.split()
        found[name.partition("@")[0]] = [a for a in addresses if re.fullmatch(r"[\d.]+/\d+", a)]
    return found


def _lab_address(out: Out, name: str) -> str:
    """The one lab address of a ``%%container`` cell that prints hostname and ``ip -br addr``."""
    assert f"[started the container {name} on network lab: " in out.stderr, out.stderr
    assert out.lines[0] == name
    interfaces = _interfaces(out.lines[1:])
    assert interfaces.keys() == {"lo", "eth0"} and interfaces["lo"] == ["127.0.0.1/8"], out.lines
    (address,) = interfaces["eth0"]
    assert address.startswith("10.200.0.") and address.endswith("/24"), address
    return address.partition("/")[0]


def test_a_cell_alone_has_only_its_loopback(net_cells: Callable[[str], Out]) -> None:
    alone = net_cells("check-alone")
    assert _interfaces(alone.lines[:1]) == {"lo": ["127.0.0.1/8"]}
    assert alone.lines[1:] == ["ping failed: nothing leads out of this container"]
    assert "Network is unreachable" in alone.stderr
    assert net_cells("check-network-none").stdout.startswith("network: none: ")


def test_lab_addresses_and_names(net_cells: Callable[[str], Out]) -> None:
    assert net_cells("check-lab").lines[0].startswith(
        "the next cells join network lab (10.200.0.0/24)")  # fmt: skip
    alice = _lab_address(net_cells("check-alice"), "alice")
    bob = _lab_address(net_cells("check-bob"), "bob")
    assert alice != bob

    hosts = [line.split() for line in net_cells("check-hosts").lines]
    assert hosts[0] == ["127.0.0.1", "localhost"]
    assert hosts[2][:2] == [bob, "bob"], hosts
    lab = hosts.index(["#", "network", "lab"])
    assert [alice, "alice"] in [row[:2] for row in hosts[lab + 1 :]], hosts

    ping = net_cells("check-ping")
    assert ping.lines[0].startswith(f"PING alice ({alice})"), ping.lines
    assert "3 packets transmitted, 3 received, 0% packet loss" in ping.stdout

    members = net_cells("check-members").lines
    assert members[0] == "network: lab (subnet 10.200.0.0/24, gateway 10.200.0.1)"
    on_lab = dict(line.split() for line in members[members.index("On it now:") + 1 :])
    assert on_lab["alice"] == alice and on_lab["bob"] == bob, on_lab
    assert on_lab["web"].startswith("10.200.0."), on_lab


def test_nc_carries_a_message(net_cells: Callable[[str], Out]) -> None:
    listen = net_cells("check-listen")
    assert listen.lines[0] == "alice listens on port 5000"
    assert ["LISTEN", "0.0.0.0:5000"] in [[row[0], row[3]] for row in
                                          (line.split() for line in listen.lines[2:])]  # fmt: skip
    sent = net_cells("check-send")
    assert (sent.stdout, sent.stderr) == ("", "")
    assert net_cells("check-inbox").lines == ["Hi Alice, it's Bob."]


def test_web_server_by_name_and_by_link(net_cells: Callable[[str], Out],
                                        runs: Callable[[Path], Run]) -> None:  # fmt: skip
    web = net_cells("check-web")
    assert web.lines == ["web serves /srv/index.html on port 8000"]
    assert "[started the container web on network lab" in web.stderr
    url = re.fullmatch(r"web: port 8000 is published at (http://127\.0\.0\.1:\d+/)", web.plain)
    assert url, web.plain
    # The link the cell shows opened, from this process, while the notebook ran.
    assert runs(NETWORKS).opened == {url.group(1): PAGE}

    curl = net_cells("check-curl")
    assert curl.lines[0] == "HTTP/1.0 200 OK"
    assert f"Content-Length: {len(PAGE)}" in curl.lines
    assert curl.lines[-1] == PAGE.decode().strip()


def test_back_to_no_network(net_cells: Callable[[str], Out]) -> None:
    said = net_cells("check-none-set").lines
    assert said[0].startswith("the next cells have their own loopback (127.0.0.1) only")
    assert [line.split()[:4] for line in said[1:]] == [
        ["%%container", name, "stays", "on"] for name in ("alice", "bob", "web")]  # fmt: skip
    none = net_cells("check-none")
    assert _interfaces(none.lines[:1]) == {"lo": ["127.0.0.1/8"]}
    assert none.lines[1:] == ["curl failed with exit status 6", "ping failed with exit status 2"]
    assert "Could not resolve host: web" in none.stderr


def test_networks_exercise_is_checked(net_cells: Callable[[str], Out]) -> None:
    assert net_cells("exercise-setup").lines == ["vault is listening on port 7000"]
    assert net_cells("exercise").lines == [
        "No answer yet: set the variable answer, then run check_answer again."]  # fmt: skip
    assert net_cells("exercise-solution").lines == ["Correct: the secret word is penguin."]
    assert net_cells("check-rm").lines == ["removed alice, bob, web, vault"]
