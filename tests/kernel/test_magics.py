"""Magics, `display`, completion, inspection and is_complete of the real kernel.

Everything goes through the Jupyter protocol (execute, complete, inspect and
is_complete requests); what the magics did to containers and images is read
from the session's daemon, through docker-py and the ``sandbox`` CLI.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import docker
import pytest

from .conftest import Cell, Driver, magic_error, ok, unique

HANG_GUARD = 60.0
MAGIC_USAGES = ("%help", "%image", "%limits", "%layers", "%diff", "%autodiff", "%stats",
                "%%stats", "%commit", "%reset", "%%container", "%rm")  # fmt: skip
# A 1x1 PNG (one opaque red pixel).
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5E"
    "rkJggg=="
)


# -- %help ------------------------------------------------------------------------------


def test_help_lists_every_magic(kernel: Driver) -> None:
    text = ok(kernel, "%help").stdout
    for usage in MAGIC_USAGES:
        assert f"  {usage}" in text, (usage, text)
    assert "display" in text


def test_help_of_one_magic(kernel: Driver) -> None:
    text = ok(kernel, "%help limits").stdout
    assert text.startswith("%limits [memory=SIZE] [cpus=N] [pids=N]")
    assert "memory=64m" in text and "pids=64" in text and "none" in text
    assert ok(kernel, "%help %commit").stdout.startswith("%commit NAME[:TAG]")
    assert "no magic %nosuch" in magic_error(kernel, "%help nosuch")


def test_unknown_magic_names_help(kernel: Driver) -> None:
    message = magic_error(kernel, "%nosuch arg\necho never")
    assert "%nosuch" in message and "%help" in message
    message = magic_error(kernel, "%container web")  # a cell magic used as a line magic
    assert "%%container" in message
    message = magic_error(kernel, "%%nosuch\necho never")
    assert "%%nosuch" in message and "%%container" in message


def test_magics_and_shell_in_one_cell(kernel: Driver) -> None:
    cell = ok(kernel, "%limits\n# a comment\necho shell after")
    assert cell.stdout.endswith("shell after\n")
    assert "memory=" in cell.stdout


# -- %limits ----------------------------------------------------------------------------


def test_limits_show_set_and_reject(kernel: Driver) -> None:
    default = ok(kernel, "%limits").stdout
    assert default == "memory=512MiB  cpus=unlimited  pids=512\n"
    try:
        said = ok(kernel, "%limits memory=64m cpus=0.5 pids=64").stdout
        assert said == "the next cells run with memory=64MiB  cpus=0.5  pids=64\n"
        assert ok(kernel, "%limits").stdout == "memory=64MiB  cpus=0.5  pids=64\n"
        assert ok(kernel, "echo still runs").stdout == "still runs\n"

        message = magic_error(kernel, "%limits memory=lots")
        assert "memory=lots" in message
        message = magic_error(kernel, "%limits foo=1")
        assert "'foo=1'" in message and "memory, cpus, pids" in message
        message = magic_error(kernel, "%limits pids=3")
        assert "too small" in message
        # Nothing of a rejected line applies, not even its valid part.
        message = magic_error(kernel, "%limits pids=100 memory=lots")
        assert "memory=lots" in message
        assert ok(kernel, "%limits").stdout == "memory=64MiB  cpus=0.5  pids=64\n"

        said = ok(kernel, "%limits memory=none").stdout
        assert "memory=unlimited" in said
    finally:
        ok(kernel, "%limits memory=default cpus=none pids=default")
    assert ok(kernel, "%limits").stdout == default


@pytest.mark.slow
def test_limits_apply_to_the_cell(kernel: Driver) -> None:
    """A pids limit the cell's cgroup enforces (forks fail past it)."""
    try:
        ok(kernel, "%limits pids=16")
        cell = kernel.run("for i in $(seq 40); do sleep 5 & done; wait")
        assert cell.status == "error"
        assert "fork" in cell.stderr.lower() or "resource" in cell.stderr.lower(), cell.stderr
    finally:
        ok(kernel, "%limits pids=default")


# -- %image, %commit, %reset ------------------------------------------------------------


def test_image_nosuch_leaves_the_session_unchanged(kernel: Driver) -> None:
    ok(kernel, "echo kept > /image-file; image_var=kept")
    before = ok(kernel, "%image").stdout
    assert before.startswith("base image: base;")
    message = magic_error(kernel, "%image nosuch-image-xyz")
    assert "nosuch-image-xyz" in message
    assert ok(kernel, "%image").stdout == before
    assert ok(kernel, 'cat /image-file; echo "$image_var"').stdout == "kept\nkept\n"


def test_commit_makes_an_image_others_can_run(
    kernel: Driver, api: docker.DockerClient, cli: Any
) -> None:
    name = unique("myimg") + ":1"
    ok(kernel, "echo committed > /commit-file")
    try:
        said = ok(kernel, f"%commit {name}").stdout
        assert name in said
        image = api.images.get(name)
        assert name in image.tags
        listed = cli("images")
        assert name.split(":")[0] in listed.stdout.decode()
        run = cli("run", "--rm", name, "cat", "/commit-file")
        assert run.returncode == 0, run.stderr.decode()
        assert run.stdout == b"committed\n"
    finally:
        # The session's image is the committed one, which has no other name: removing
        # its last tag deletes it, so the session leaves it first.
        ok(kernel, "%reset")
        cli("rmi", name)
    with pytest.raises(docker.errors.ImageNotFound):
        api.images.get(name)
    assert "usage: %commit" in magic_error(kernel, "%commit")


def test_reset_forgets_files_and_variables(kernel: Driver) -> None:
    ok(kernel, "echo gone > /reset-file; reset_var=gone; cd /tmp")
    assert ok(kernel, 'cat /reset-file; echo "[$reset_var]"; pwd').stdout == "gone\n[gone]\n/tmp\n"
    said = ok(kernel, "%reset").stdout
    assert "back to base" in said
    cell = kernel.run('echo "[$reset_var]"; pwd; cat /reset-file')
    assert cell.stdout == "[]\n/\n"
    assert "No such file" in cell.stderr
    assert "no cell has changed" in ok(kernel, "%diff").stdout


# -- %layers and %diff ------------------------------------------------------------------


def test_layers_lists_a_line_per_cell_layer(kernel: Driver) -> None:
    ok(kernel, "%reset")
    first = ok(kernel, "echo one > /layer-one")
    nothing = ok(kernel, "echo no change")
    second = ok(kernel, "echo two > /layer-two\necho more")
    text = ok(kernel, "%layers").plain
    n1, n0, n2 = (c.reply["execution_count"] for c in (first, nothing, second))
    assert f"cell {n1}: echo one > /layer-one" in text, text
    assert f"cell {n2}: echo two > /layer-two" in text, text
    assert f"cell {n0}:" not in text
    assert "2 from this notebook's cells" in text
    cell_lines = [line for line in text.splitlines() if " cell " in line]
    assert len(cell_lines) == 2, text
    ok(kernel, "%reset")
    text = ok(kernel, "%layers").plain
    assert "cell " not in text.replace("each cell", "") and "0 from this notebook's cells" in text


def test_diff_of_a_cell_and_of_the_last(kernel: Driver) -> None:
    ok(kernel, "%reset")
    first = ok(kernel, "mkdir -p /srv/d && echo a > /srv/d/added && echo b > /srv/d/kept")
    second = ok(kernel, "rm /srv/d/added; echo changed >> /srv/d/kept; touch /second-file")
    nothing = ok(kernel, "true")
    n1, n2, n0 = (c.reply["execution_count"] for c in (first, second, nothing))

    text = ok(kernel, f"%diff {n1}").plain
    assert text.startswith(f"cell {n1} changed")
    assert "A /srv/d/added" in text and "A /srv/d/kept" in text
    text = ok(kernel, f"%diff [{n2}]").plain
    assert "D /srv/d/added" in text and "A /second-file" in text
    assert "C /srv/d/kept" in text and "copied up from layer" in text
    assert ok(kernel, "%diff").plain == text  # the last cell that changed something
    text = ok(kernel, f"%diff {n0}").stdout
    assert text.startswith(f"cell {n0} changed nothing on disk"), text
    assert f"{n1}, {n2}" in text
    assert "cell number" in magic_error(kernel, "%diff x")
    ok(kernel, "%reset")


# -- %%container and %rm ----------------------------------------------------------------


def test_container_magic_keeps_a_container(kernel: Driver, api: docker.DockerClient) -> None:
    web = unique("web")
    try:
        cell = kernel.run(f"%%container {web}\nmkdir -p /srv; echo hi > /srv/x; sleep 1000 &")
        assert cell.status == "ok", cell.messages
        assert f"started the container {web}" in cell.stderr
        assert "killed" not in cell.stderr
        assert api.containers.get(web).status == "running"

        cell = kernel.run(f"%%container {web}\ncat /srv/x; pgrep -x sleep >/dev/null && echo found")
        assert cell.status == "ok", cell.messages
        assert cell.stdout == "hi\nfound\n"
        assert "started the container" not in cell.stderr

        cell = kernel.run("cat /srv/x")
        assert cell.status == "error"
        assert "No such file" in cell.stderr
    finally:
        said = ok(kernel, f"%rm {web}").stdout
    assert said == f"removed {web}\n"
    with pytest.raises(docker.errors.NotFound):
        api.containers.get(web)
    assert f"%rm {web}" in magic_error(kernel, f"%rm {web}")


# -- display ----------------------------------------------------------------------------


def one_display(cell: Cell) -> dict[str, Any]:
    assert cell.status == "ok", cell.messages
    assert len(cell.displays) == 1, cell.messages
    return dict(cell.displays[0]["data"])


def test_display_png(kernel: Driver) -> None:
    data = one_display(
        ok(kernel, f"echo {PNG_B64} | base64 -d > /tmp/dot.png; display /tmp/dot.png")
    )
    assert base64.b64decode(data["image/png"]) == base64.b64decode(PNG_B64)
    assert "image/png" in data["text/plain"]
    # The same bytes written with printf, under a name without an extension.
    octal = "".join(f"\\{b:03o}" for b in base64.b64decode(PNG_B64))
    data = one_display(ok(kernel, f"printf '{octal}' > /tmp/dot; display /tmp/dot"))
    assert base64.b64decode(data["image/png"]) == base64.b64decode(PNG_B64)


@pytest.mark.parametrize(
    ("name", "content", "mime"),
    [
        ("pic.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>',
         "image/svg+xml"),
        ("page.html", "<p>hi <b>there</b></p>", "text/html"),
        ("notes.md", "# Title\n\n*em*", "text/markdown"),
        ("notes.txt", "plain words", "text/plain"),
    ],
)  # fmt: skip
def test_display_text_kinds(kernel: Driver, name: str, content: str, mime: str) -> None:
    data = one_display(
        ok(kernel, f"cat > /tmp/{name} <<'EOF'\n{content}\nEOF\ndisplay /tmp/{name}")
    )
    assert data[mime].rstrip("\n") == content


def test_display_json(kernel: Driver) -> None:
    data = one_display(
        ok(
            kernel,
            """echo '{"a": [1, 2], "b": "c"}' > /tmp/x.json
display /tmp/x.json""",
        )
    )
    assert data["application/json"] == {"a": [1, 2], "b": "c"}
    cell = kernel.run("echo '{broken' > /tmp/bad.json; display /tmp/bad.json")
    assert not cell.displays
    assert "not valid JSON" in cell.stderr


def test_display_from_stdin(kernel: Driver) -> None:
    data = one_display(ok(kernel, "echo '<i>piped</i>' | display --mime text/html"))
    assert data["text/html"] == "<i>piped</i>\n"
    assert "stdin" in data["text/plain"]
    data = one_display(ok(kernel, "echo hello | display"))
    assert data["text/plain"] == "hello\n"
    data = one_display(ok(kernel, f"echo {PNG_B64} | base64 -d | display"))
    assert base64.b64decode(data["image/png"]) == base64.b64decode(PNG_B64)


def test_display_output_order(kernel: Driver) -> None:
    cell = ok(kernel, "echo before; echo text | display; echo after")
    kinds = [m["msg_type"] for m in cell.messages if m["msg_type"] != "execute_input"]
    assert kinds == ["stream", "display_data", "stream"], cell.messages
    assert cell.stdout == "before\nafter\n"


def test_display_rejects_unknown_binary_and_missing_files(kernel: Driver) -> None:
    cell = kernel.run(r"printf '\000\001\002\377\376' > /tmp/blob; display /tmp/blob")
    assert not cell.displays
    assert "binary data" in cell.stderr and "--mime" in cell.stderr
    cell = kernel.run("display /no/such/file")
    assert not cell.displays
    assert "cannot read /no/such/file" in cell.stderr
    assert cell.status == "error" and cell.reply["evalue"] == "1"


# -- completion, inspection, is_complete ------------------------------------------------


def complete(kernel: Driver, code: str, cursor: int | None = None) -> dict[str, Any]:
    reply = kernel.kc.complete(code, len(code) if cursor is None else cursor, reply=True,
                               timeout=HANG_GUARD)  # fmt: skip
    content: dict[str, Any] = reply["content"]
    assert content["status"] == "ok", content
    return content


def test_complete_commands_and_paths(kernel: Driver) -> None:
    reply = complete(kernel, "ech")
    assert "echo" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (0, 3)
    reply = complete(kernel, "ls /us")
    assert "/usr/" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (3, 6)
    assert complete(kernel, "ls /nosuchdir/x")["matches"] == []


def test_complete_sees_the_session_state(kernel: Driver) -> None:
    ok(kernel, "myvar_for_completion=1; myfunc_for_completion() { :; }")
    reply = complete(kernel, "echo $myvar_for_c")
    assert reply["matches"] == ["$myvar_for_completion"]
    assert reply["cursor_start"] == 5
    assert "myfunc_for_completion" in complete(kernel, "myfunc_for")["matches"]

    name = f"only-in-the-sandbox-{uuid.uuid4().hex[:8]}"
    assert not os.path.exists(f"/opt/{name}")
    ok(kernel, f"mkdir -p /opt/{name}/inner && touch /opt/{name}/inner/file.txt")
    assert complete(kernel, "cat /opt/only-in-the-s")["matches"] == [f"/opt/{name}/"]
    ok(kernel, f"cd /opt/{name}")
    assert complete(kernel, "cat inner/fi")["matches"] == ["inner/file.txt"]
    ok(kernel, "cd /")


def test_inspect(kernel: Driver) -> None:
    reply = kernel.kc.inspect("cd", 2, reply=True, timeout=HANG_GUARD)["content"]
    assert reply["status"] == "ok"
    assert reply["found"] is True
    assert "cd: cd" in reply["data"]["text/plain"]
    assert "directory" in reply["data"]["text/plain"]
    reply = kernel.kc.inspect("nosuchcmd", 9, reply=True, timeout=HANG_GUARD)["content"]
    assert reply["status"] == "ok"
    assert reply["found"] is False


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("for i in 1; do", "incomplete"),
        ("echo 'abc", "incomplete"),
        ("cat <<EOF", "incomplete"),
        ("cat <<EOF\nbody\nEOF", "complete"),
        ("echo hi", "complete"),
        ("fi fi )", "invalid"),
        ("%%container web\nif true; then", "incomplete"),
    ],
)
def test_is_complete(kernel: Driver, code: str, status: str) -> None:
    msg_id = kernel.kc.is_complete(code)
    while True:  # (jupyter_client's is_complete has no reply=True)
        msg = kernel.kc.get_shell_msg(timeout=HANG_GUARD)
        if msg["parent_header"].get("msg_id") == msg_id:
            break
    assert msg["msg_type"] == "is_complete_reply"
    reply = msg["content"]
    assert reply["status"] == status, (code, reply)
    if status == "incomplete" and code.startswith("for"):
        assert reply["indent"] == "  "


def test_display_json_roundtrip_file(kernel: Driver) -> None:
    """JSON written by a program (not typed) is shown as the object it holds."""
    payload = {"n": list(range(5)), "s": "é"}
    text = json.dumps(payload).replace("'", "'\\''")
    data = one_display(ok(kernel, f"printf '%s' '{text}' > /tmp/p.json; display /tmp/p.json"))
    assert data["application/json"] == payload
