"""The REST API over its unix socket, byte for byte, with real containers."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .helpers import (
    BIN,
    TEMP_PREFIX,
    Daemon,
    _processes_of,
    demux,
    hijack_attach,
    joined,
    start_daemon,
    stop_daemon,
)

pytestmark = pytest.mark.root

UPGRADED_HEAD = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.%s-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)


def attach(daemon: Daemon, cid: str, query: str) -> tuple[socket.socket, bytes, bytes]:
    """Open a hijacked attach; returns the socket, the reply head and any bytes after it."""
    return hijack_attach(daemon, cid, query)


def read_to_end(sock: socket.socket, data: bytes = b"") -> bytes:
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def wait_status(daemon: Daemon, cid: str, condition: str = "not-running") -> int:
    reply = daemon.request("POST", f"/v1.44/containers/{cid}/wait?condition={condition}")
    assert reply.status == 200, reply.body
    assert reply.json()["Error"] is None
    return int(reply.json()["StatusCode"])


def remove(daemon: Daemon, cid: str) -> None:
    reply = daemon.request("DELETE", f"/v1.44/containers/{cid}?force=1")
    assert reply.status == 204, reply.body


# -- negotiation and errors ----------------------------------------------------------


def test_ping_answers_get_and_head_with_the_negotiation_headers(daemon: Daemon) -> None:
    for method in ("GET", "HEAD"):
        reply = daemon.request(method, "/_ping")
        assert reply.status == 200
        assert reply.body == (b"OK" if method == "GET" else b"")
        assert reply.headers["Api-Version"] == "1.44"
        assert reply.headers["Ostype"] == "linux"
        assert reply.headers["Docker-Experimental"] == "false"
        assert reply.headers["Builder-Version"] == "1"
        assert reply.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
        assert reply.headers["Pragma"] == "no-cache"
    assert daemon.request("GET", "/v1.44/_ping").body == b"OK"


def test_version_is_served_with_and_without_a_prefix(daemon: Daemon) -> None:
    for url in ("/version", "/v1.24/version", "/v1.44/version"):
        reply = daemon.request("GET", url)
        assert reply.status == 200
        body = reply.json()
        assert body["ApiVersion"] == "1.44"
        assert body["MinAPIVersion"] == "1.24"
        assert body["Os"] == "linux"
        assert body["Components"][0]["Name"] == "Engine"


def test_a_newer_api_version_is_refused(daemon: Daemon) -> None:
    reply = daemon.request("GET", "/v1.99/version")
    assert reply.status == 400
    assert "too new" in reply.json()["message"]
    assert reply.headers["Api-Version"] == "1.44"


def test_info_counts_containers_and_images(daemon: Daemon) -> None:
    body = daemon.request("GET", "/v1.44/info").json()
    assert body["Images"] >= 1
    assert body["Driver"] == "overlay2"
    assert body["OSType"] == "linux"
    assert body["DockerRootDir"] == str(daemon.root)
    assert isinstance(body["NCPU"], int) and isinstance(body["MemTotal"], int)


def test_unknown_routes_are_a_json_404(daemon: Daemon) -> None:
    for method, url in [("GET", "/nope"), ("GET", "/v1.44/containers/x/nope"),
                        ("GET", "/v1.44/"), ("POST", "/v1.44/containers/prune")]:  # fmt: skip
        reply = daemon.request(method, url)
        assert reply.status == 404
        assert reply.headers["Content-Type"] == "application/json"  # exactly: moby needs it
        assert reply.json() == {"message": "page not found"}
        assert reply.headers["Api-Version"] == "1.44"


def test_unknown_containers_and_images_are_a_404_naming_them(daemon: Daemon) -> None:
    for method, url in [
        ("GET", "/v1.44/containers/nosuch/json"),
        ("POST", "/v1.44/containers/nosuch/start"),
        ("POST", "/v1.44/containers/nosuch/wait"),
        ("GET", "/v1.44/containers/nosuch/logs?stdout=1"),
        ("DELETE", "/v1.44/containers/nosuch"),
    ]:
        reply = daemon.request(method, url)
        assert reply.status == 404, url
        assert "No such container: nosuch" in reply.json()["message"]
    reply = daemon.request("POST", "/v1.44/containers/create", {"Image": "nosuch", "Cmd": ["true"]})
    assert reply.status == 404  # what makes the docker CLI try to pull
    assert "No such image: nosuch" in reply.json()["message"]
    assert daemon.request("GET", "/v1.44/images/nosuch/json").status == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"Image": "base", "Cmd": 5}', "invalid Cmd"),
        (b'{"Image": "base", "Cmd": ["true"], "Tty": "yes"}', "invalid Tty"),
        (b'{"Image": "base", "Cmd": ["true"], "HostConfig": {"Memory": "64m"}}', "Memory"),
        (b'{"Image": "base", "Cmd": ["true"], "HostConfig": {"Memory": 1024}}', "6MB"),
        (b'{"Image": "base", "Cmd": ["true"], "HostConfig": {"Binds": ["/:/host"]}}', "Binds"),
        (b'{"Image": "base", "Cmd": ["true"], "HostConfig": {"NanoCpus": 999999000000000}}',
         "Range of CPUs"),
        (b'{"Cmd": ["true"]}', "no image"),
        (b'{"Image": "BAD NAME", "Cmd": ["true"]}', "invalid"),
    ],
)  # fmt: skip
def test_malformed_create_requests_are_a_400_that_says_why(
    daemon: Daemon, body: bytes, needle: str
) -> None:
    reply = daemon.request("POST", "/v1.44/containers/create", raw=body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert reply.status == 400, reply.body
    message = reply.json()["message"]
    assert needle in message
    assert "Traceback" not in message


def test_bad_query_values_are_a_400(daemon: Daemon) -> None:
    cid = daemon.create(["true"])
    try:
        for url, needle in [
            (f"/v1.44/containers/{cid}/kill?signal=SIGNOPE", "invalid signal"),
            (f"/v1.44/containers/{cid}/stop?t=soon", "not an integer"),
            (f"/v1.44/containers/{cid}/wait?condition=whenever", "invalid wait condition"),
            (f"/v1.44/containers/{cid}/logs", "at least one stream"),
            ("/v1.44/containers/json?filters=%7Bbad", "invalid filters"),
        ]:
            method = "GET" if "logs" in url or "json" in url else "POST"
            reply = daemon.request(method, url)
            assert reply.status == 400, (url, reply.body)
            assert needle in reply.json()["message"]
    finally:
        remove(daemon, cid)


def test_the_socket_is_0660(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
    assert stat.S_ISSOCK(daemon.socket.stat().st_mode)


# -- containers -------------------------------------------------------------------------


def test_create_start_wait_logs_and_inspect(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "echo out; echo err >&2; echo two; exit 4"], name="api-one")
    try:
        assert len(cid) == 64
        listed = daemon.request("GET", "/v1.44/containers/json?all=1").json()
        assert any(c["Id"] == cid and c["State"] == "created" for c in listed)
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert wait_status(daemon, cid) == 4
        info = daemon.request("GET", "/v1.44/containers/api-one/json").json()
        assert info["Id"] == cid and info["Name"] == "/api-one"
        assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 4
        assert info["HostConfig"]["LogConfig"]["Type"] == "json-file"
        running = daemon.request("GET", "/v1.44/containers/json").json()
        assert all(c["Id"] != cid for c in running)  # without all=1: running ones only

        reply = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&stderr=1")
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
        frames = demux(reply.body)
        assert joined(frames, 1) == b"out\ntwo\n"
        assert joined(frames, 2) == b"err\n"
        only_err = demux(daemon.request("GET", f"/v1.44/containers/{cid}/logs?stderr=1").body)
        assert only_err == [(2, b"err\n")]
        tail = demux(daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&tail=1").body)
        assert joined(tail, 1) == b"two\n"
        stamped = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stderr=1&timestamps=1")
        stamp, _, text = demux(stamped.body)[0][1].partition(b" ")
        assert stamp.endswith(b"Z") and b"T" in stamp and text == b"err\n"
    finally:
        remove(daemon, cid)


def test_logs_follow_streams_until_the_container_exits(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        started = time.monotonic()
        reply = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&follow=1")
        assert joined(demux(reply.body), 1) == b"1\n2\n3\n"
        assert time.monotonic() - started >= 0.3  # it really followed
    finally:
        remove(daemon, cid)


def test_logs_of_a_large_output_arrive_whole_and_tail_keeps_the_end(daemon: Daemon) -> None:
    cid = daemon.create(["seq", "1", "300000"])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert wait_status(daemon, cid) == 0
        body = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1").body
        assert joined(demux(body), 1) == "".join(f"{i}\n" for i in range(1, 300001)).encode()
        body = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&tail=3").body
        assert demux(body) == [(1, b"299998\n"), (1, b"299999\n"), (1, b"300000\n")]
        body = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&tail=0").body
        assert body == b""
    finally:
        remove(daemon, cid)


def test_wait_before_start_replies_with_headers_at_once(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "exit 7"])
    try:
        conn = daemon.connection(timeout=10)
        conn.request("POST", f"/v1.44/containers/{cid}/wait?condition=next-exit")
        resp = conn.getresponse()  # returns on the headers: the container is not started
        assert resp.status == 200
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert json.loads(resp.read()) == {"StatusCode": 7, "Error": None}
        conn.close()
        assert wait_status(daemon, cid) == 7  # not-running: at once for an exited one
    finally:
        remove(daemon, cid)


def test_wait_removed_with_auto_remove(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "exit 2"], HostConfig={"AutoRemove": True})
    conn = daemon.connection(timeout=10)
    conn.request("POST", f"/v1.44/containers/{cid}/wait?condition=removed")
    resp = conn.getresponse()
    assert resp.status == 200
    assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
    assert json.loads(resp.read())["StatusCode"] == 2
    conn.close()
    assert daemon.request("GET", f"/v1.44/containers/{cid}/json").status == 404


def test_a_missing_command_fails_start_with_the_words_the_cli_maps_to_127(daemon: Daemon) -> None:
    cid = daemon.create(["nosuchcommand"])
    try:
        reply = daemon.request("POST", f"/v1.44/containers/{cid}/start")
        assert reply.status == 400
        message = reply.json()["message"]
        assert "nosuchcommand" in message and "executable file not found" in message
        assert daemon.request("GET", f"/v1.44/containers/{cid}/json").json()["State"][
            "ExitCode"
        ] == 127  # fmt: skip
    finally:
        remove(daemon, cid)


READY_SLEEP = ["sh", "-c", "echo ready; exec sleep 30"]


def test_start_twice_is_304_and_stop_of_a_stopped_one_is_304(daemon: Daemon) -> None:
    cid = daemon.create(READY_SLEEP)
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 304
        daemon.wait_for_output(cid, b"ready")
        running = daemon.request("GET", "/v1.44/containers/json").json()
        assert any(c["Id"] == cid and c["State"] == "running" for c in running)
        assert daemon.request("POST", f"/v1.44/containers/{cid}/stop?t=5").status == 204
        assert wait_status(daemon, cid) == 143  # SIGTERM, forwarded by the init
        assert daemon.request("POST", f"/v1.44/containers/{cid}/stop").status == 304
    finally:
        remove(daemon, cid)


def test_stop_kills_after_the_grace_period(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "trap '' TERM; echo ready; sleep 30 & wait"])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        daemon.wait_for_output(cid, b"ready")  # the trap is set
        started = time.monotonic()
        assert daemon.request("POST", f"/v1.44/containers/{cid}/stop?t=1").status == 204
        assert 0.9 <= time.monotonic() - started < 10
        assert wait_status(daemon, cid) == 137
    finally:
        remove(daemon, cid)


def test_kill_with_sigkill_returns_once_the_container_has_exited(daemon: Daemon) -> None:
    cid = daemon.create(["sleep", "30"])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert daemon.request("POST", f"/v1.44/containers/{cid}/kill").status == 204
        state = daemon.request("GET", f"/v1.44/containers/{cid}/json").json()["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 137)
    finally:
        remove(daemon, cid)


def test_kill_sends_the_signal_and_refuses_a_stopped_container(daemon: Daemon) -> None:
    cid = daemon.create(READY_SLEEP)
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        daemon.wait_for_output(cid, b"ready")
        assert daemon.request("POST", f"/v1.44/containers/{cid}/kill?signal=TERM").status == 204
        assert wait_status(daemon, cid) == 143
        reply = daemon.request("POST", f"/v1.44/containers/{cid}/kill")
        assert reply.status == 409
        assert "is not running" in reply.json()["message"]
    finally:
        remove(daemon, cid)


def test_remove_refuses_a_running_container_without_force(daemon: Daemon) -> None:
    cid = daemon.create(["sleep", "30"])
    assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
    reply = daemon.request("DELETE", f"/v1.44/containers/{cid}")
    assert reply.status == 409
    assert "running" in reply.json()["message"]
    assert daemon.request("DELETE", f"/v1.44/containers/{cid}?force=1").status == 204
    assert daemon.request("GET", f"/v1.44/containers/{cid}/json").status == 404


# -- attach -------------------------------------------------------------------------------


def test_attach_before_start_gets_every_byte_then_eof(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "echo out; echo err >&2; seq 1 2000"])
    try:
        sock, head, rest = attach(daemon, cid, "stream=1&stdout=1&stderr=1")
        assert head == UPGRADED_HEAD % b"multiplexed"
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        frames = demux(read_to_end(sock, rest))
        numbers = "".join(f"{i}\n" for i in range(1, 2001)).encode()
        assert joined(frames, 1) == b"out\n" + numbers
        assert joined(frames, 2) == b"err\n"
        assert wait_status(daemon, cid) == 0
    finally:
        remove(daemon, cid)


def test_attach_forwards_stdin_and_its_half_close(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "cat; echo done"], OpenStdin=True, AttachStdin=True)
    try:
        sock, head, rest = attach(daemon, cid, "stream=1&stdin=1&stdout=1&stderr=1")
        assert head == UPGRADED_HEAD % b"multiplexed"
        sock.sendall(b"early\n")  # before the start: kept, then written
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        sock.sendall(b"late\n")
        sock.shutdown(socket.SHUT_WR)  # what the CLI does when its stdin ends
        frames = demux(read_to_end(sock, rest))
        assert joined(frames, 1) == b"early\nlate\ndone\n"
        assert wait_status(daemon, cid) == 0
    finally:
        remove(daemon, cid)


def test_attach_with_a_tty_is_raw_and_resize_reaches_the_terminal(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "sleep 1; stty size; echo err >&2"], Tty=True)
    try:
        sock, head, rest = attach(daemon, cid, "stream=1&stdout=1&stderr=1")
        assert head == UPGRADED_HEAD % b"raw"
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert daemon.request("POST", f"/v1.44/containers/{cid}/resize?h=30&w=100").status == 200
        assert read_to_end(sock, rest) == b"30 100\r\nerr\r\n"
    finally:
        remove(daemon, cid)


def test_console_size_from_create_is_applied_at_start(daemon: Daemon) -> None:
    # The size is set just after the start (the engine cannot set it before
    # the exec yet), so a command that asks at once may still see 0 0.
    cmd = ["sh", "-c", "sleep 1; stty size"]
    cid = daemon.create(cmd, Tty=True, HostConfig={"ConsoleSize": [12, 34]})
    try:
        sock, _head, rest = attach(daemon, cid, "stream=1&stdout=1")
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert read_to_end(sock, rest) == b"12 34\r\n"
    finally:
        remove(daemon, cid)


def test_attach_with_logs_replays_then_follows(daemon: Daemon) -> None:
    cid = daemon.create(["sh", "-c", "echo first"])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert wait_status(daemon, cid) == 0
        sock, _head, rest = attach(daemon, cid, "logs=1&stream=1&stdout=1")
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert joined(demux(read_to_end(sock, rest)), 1) == b"first\nfirst\n"
    finally:
        remove(daemon, cid)


# -- copy-on-write and images ---------------------------------------------------------------


def test_changes_commit_history_tag_and_image_removal(daemon: Daemon) -> None:
    script = "mkdir /data && echo x > /data/f && rm /etc/os-release"
    cid = daemon.create(["sh", "-c", script])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        assert wait_status(daemon, cid) == 0
        changes = daemon.request("GET", f"/v1.44/containers/{cid}/changes").json()
        kinds = {c["Path"]: c["Kind"] for c in changes}
        assert kinds["/data"] == 1 and kinds["/data/f"] == 1  # added
        assert kinds["/etc/os-release"] == 2  # deleted
        assert kinds["/etc"] == 0  # changed

        reply = daemon.request(
            "POST",
            f"/v1.44/commit?container={cid}&repo=docker.io%2Flibrary%2Fapi-image&tag=1"
            "&comment=from+the+api&author=tester",
        )
        assert reply.status == 201, reply.body
        image_id = reply.json()["Id"]
        assert image_id.startswith("sha256:") and len(image_id) == 71

        info = daemon.request("GET", "/v1.44/images/api-image:1/json").json()
        assert info["Id"] == image_id and info["RepoTags"] == ["api-image:1"]
        same = daemon.request("GET", "/v1.44/images/docker.io/library/api-image:1/json").json()
        assert same["Id"] == image_id  # the docker CLI's normalized names
        history = daemon.request("GET", "/v1.44/images/api-image:1/history").json()
        assert history[0]["Id"] == image_id and history[0]["Comment"] == "from the api"
        assert history[0]["CreatedBy"] == f"sh -c '{script}'"
        assert history[-1]["Id"] == "<missing>"

        reply = daemon.request("POST", "/v1.44/images/api-image:1/tag?repo=api-other&tag=2")
        assert reply.status == 201
        listed = daemon.request("GET", "/v1.44/images/json").json()
        mine = [i for i in listed if i["Id"] == image_id]
        assert sorted(mine[0]["RepoTags"]) == ["api-image:1", "api-other:2"]
        for key in ("ParentId", "RepoDigests", "Created", "Size", "SharedSize", "Containers"):
            assert key in mine[0]

        # The new image runs with the change in it.
        child = daemon.create(["cat", "/data/f"], Image="api-image:1")
        assert daemon.request("POST", f"/v1.44/containers/{child}/start").status == 204
        assert wait_status(daemon, child) == 0
        logs = daemon.request("GET", f"/v1.44/containers/{child}/logs?stdout=1").body
        assert joined(demux(logs), 1) == b"x\n"
        reply = daemon.request("DELETE", "/v1.44/images/api-other:2")
        assert reply.status == 200 and reply.json() == [{"Untagged": "api-other:2"}]
        reply = daemon.request("DELETE", "/v1.44/images/api-image:1")
        assert reply.status == 409  # its last tag, and the child container uses it
        assert "uses it" in reply.json()["message"]
        remove(daemon, child)
        reply = daemon.request("DELETE", "/v1.44/images/api-image:1")
        assert reply.status == 200
        assert reply.json() == [{"Untagged": "api-image:1"}, {"Deleted": image_id}]
        assert daemon.request("GET", f"/v1.44/images/{image_id}/json").status == 404
    finally:
        remove(daemon, cid)


def test_commit_of_a_running_container_is_a_409(daemon: Daemon) -> None:
    cid = daemon.create(["sleep", "30"])
    try:
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        reply = daemon.request("POST", f"/v1.44/commit?container={cid}&repo=nope")
        assert reply.status == 409
        assert "stop it first" in reply.json()["message"]
    finally:
        remove(daemon, cid)


def test_containers_list_filters(daemon: Daemon) -> None:
    cid = daemon.create(["true"], name="filtered-one")
    try:
        url = "/v1.44/containers/json?all=1&filters=" + json.dumps({"name": ["filtered-one"]})
        listed = daemon.request("GET", url.replace(" ", "")).json()
        assert [c["Id"] for c in listed] == [cid]
        assert listed[0]["Names"] == ["/filtered-one"] and listed[0]["Status"] == "Created"
    finally:
        remove(daemon, cid)


# -- the daemon's own life ----------------------------------------------------------------


def test_sigterm_stops_running_containers_and_cleans_up() -> None:
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        d = start_daemon(tmp)
        try:
            cid = d.create(["sleep", "300"])
            assert d.request("POST", f"/v1.44/containers/{cid}/start").status == 204
            assert _processes_of(d.root)
            # Clients still waiting when the daemon stops are let go.
            attached, _head, _rest = attach(d, cid, "stream=1&stdout=1")
            never = d.create(["true"])
            waiting, _head, _rest = attach(d, never, "stream=1&stdout=1")
            # A second daemon refuses the same socket and the same store.
            second = subprocess.run(
                [str(BIN / "sandboxd"), "--host", d.url, "--root", str(d.root)],
                capture_output=True, timeout=30,
            )  # fmt: skip
            assert second.returncode == 1
            assert b"another sandboxd" in second.stderr
        finally:
            started = time.monotonic()
            stop_daemon(d)
        assert time.monotonic() - started < 10
        assert read_to_end(attached) == b"" and read_to_end(waiting) == b""
        state = json.loads((d.root / "containers" / cid / "state.json").read_text())
        assert state["state"] == "exited"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_stale_socket_file_is_replaced() -> None:
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(tmp / "sandboxd.sock"))
        stale.close()  # the file stays, nobody listens: what a killed daemon leaves
        d = start_daemon(tmp)
        assert d.request("GET", "/_ping").status == 200
        stop_daemon(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_host_must_be_a_unix_socket() -> None:
    argv = [str(BIN / "sandboxd"), "--host", "tcp://0.0.0.0:2375"]
    result = subprocess.run(argv, capture_output=True, timeout=30)
    assert result.returncode == 1
    assert b"does not listen on TCP" in result.stderr
