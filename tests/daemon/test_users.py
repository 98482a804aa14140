"""Users and ownership: each client sees and touches only its own containers and images.

The test makes ordinary users of its own (``useradd``): two members of the
group ``sandbox`` and one outsider, removed at the end (``userdel -r``) even
after a failure. Their clients run as their own processes, so the daemon
learns who they are from the kernel (SO_PEERCRED), never from the request:
a raw HTTP client for the checks and docker-py for a real client.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .helpers import TEMP_PREFIX, Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.root

GROUP = "sandbox"
# A client that reads one request per line ({"method", "url", "body"}) and
# prints one reply per line ({"status", "body"} or {"status": 0, "errno"}).
CLIENT = r"""
import http.client, json, socket, sys

class Conn(http.client.HTTPConnection):
    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        try:
            sock.connect(sys.argv[1])
        except OSError:
            sock.close()
            raise
        self.sock = sock

for line in sys.stdin:
    req = json.loads(line)
    conn = Conn("localhost", timeout=60)
    try:
        body = None if req["body"] is None else json.dumps(req["body"]).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(req["method"], req["url"], body=body, headers=headers)
        resp = conn.getresponse()
        out = {"status": resp.status, "body": resp.read().decode("utf-8", "replace")}
    except OSError as exc:
        out = {"status": 0, "errno": exc.errno, "error": str(exc)}
    finally:
        conn.close()
    print(json.dumps(out), flush=True)
"""
# docker-py as a user: run a container, list every container and image it sees.
DOCKER_PY = r"""
import json, sys
import docker

client = docker.DockerClient(base_url=sys.argv[1], timeout=60)
out = client.containers.run("base", ["echo", sys.argv[2]], remove=True)
keep = client.containers.run("base", ["true"], detach=True, name=sys.argv[3])
keep.wait()
print(json.dumps({
    "output": out.decode(),
    "containers": [c.name for c in client.containers.list(all=True)],
    "images": sorted(t for i in client.images.list() for t in i.tags),
}))
"""


def _reachable_by_all(path: str) -> bool:
    """True if any user may run ``path`` (every directory above it searchable)."""
    real = Path(os.path.realpath(path))
    return all(p.stat().st_mode & 0o001 for p in [real, *real.parents])


def user_python() -> tuple[str, str]:
    """An interpreter ordinary users can run, and the PYTHONPATH that gives it docker-py.

    The test's own interpreter may live under /root (pyenv); Debian's, of the
    same version, reads the same site-packages.
    """
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"]
    for exe in candidates:
        if os.path.exists(exe) and _reachable_by_all(exe):
            return exe, os.pathsep.join(site.getsitepackages())
    pytest.skip(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that other users can run")


@dataclass
class User:
    """An ordinary user made for the test, and its line-per-request client."""

    name: str
    uid: int
    gid: int
    home: str
    groups: list[int]
    client: subprocess.Popen[str] | None = None

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """``python *argv`` as this user (its groups, its home, nothing of root's)."""
        exe, pythonpath = user_python()
        env = {"HOME": self.home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": pythonpath}  # fmt: skip
        return subprocess.Popen([exe, *argv], user=self.uid, group=self.gid,
                                extra_groups=self.groups, env=env, cwd="/", text=True,
                                **kw)  # fmt: skip

    def request(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        """One request through this user's client process."""
        assert self.client is not None and self.client.stdin and self.client.stdout
        self.client.stdin.write(json.dumps({"method": method, "url": url, "body": body}) + "\n")
        self.client.stdin.flush()
        line = self.client.stdout.readline()
        assert line, f"the client of {self.name} died"
        reply: dict[str, Any] = json.loads(line)
        if reply["status"] and reply["body"].startswith(("{", "[")):
            reply["json"] = json.loads(reply["body"])
        return reply

    def create(self, cmd: list[str], name: str | None = None, image: str = "base") -> str:
        url = "/v1.44/containers/create" + (f"?name={name}" if name else "")
        reply = self.request("POST", url, {"Image": image, "Cmd": cmd})
        assert reply["status"] == 201, reply
        return str(reply["json"]["Id"])

    def run(self, cmd: list[str], name: str | None = None) -> str:
        """Create, start and wait for a container; returns its ID."""
        cid = self.create(cmd, name)
        assert self.request("POST", f"/v1.44/containers/{cid}/start")["status"] == 204
        reply = self.request("POST", f"/v1.44/containers/{cid}/wait")
        assert reply["json"]["StatusCode"] == 0, reply
        return cid

    def container_names(self) -> set[str]:
        reply = self.request("GET", "/v1.44/containers/json?all=1")
        assert reply["status"] == 200, reply
        return {c["Names"][0].lstrip("/") for c in reply["json"]}

    def image_tags(self) -> set[str]:
        reply = self.request("GET", "/v1.44/images/json")
        assert reply["status"] == 200, reply
        return {t for i in reply["json"] for t in i["RepoTags"]}


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def sandbox_group() -> Iterator[int]:
    """The group ``sandbox`` (made if missing, as scripts/setup.sh does, and removed after)."""
    made = False
    try:
        gid = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        _run("groupadd", "--system", GROUP)
        made = True
        gid = grp.getgrnam(GROUP).gr_gid
    try:
        yield gid
    finally:
        if made:
            subprocess.run(["groupdel", GROUP], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def daemon(sandbox_group: int) -> Iterator[Daemon]:
    """A sandboxd started once the group exists, on a socket others can reach."""
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    os.chmod(tmp, 0o711)  # the users must get through to the socket
    try:
        d = start_daemon(tmp)
        try:
            yield d
        finally:
            stop_daemon(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def users(daemon: Daemon, sandbox_group: int) -> Iterator[dict[str, User]]:
    """alice and bob (in the group ``sandbox``) and eve (not in it), each with a client."""
    made: list[str] = []
    found: dict[str, User] = {}
    try:
        for role in ("alice", "bob", "eve"):
            name = f"sbx{os.getpid()}{role}"[:32]
            member = role != "eve"
            _run("useradd", "--create-home", "--shell", "/usr/sbin/nologin",
                 *(["--groups", GROUP] if member else []), name)  # fmt: skip
            made.append(name)
            entry = pwd.getpwnam(name)
            user = User(name, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                        [sandbox_group] if member else [])  # fmt: skip
            user.client = user.popen(["-c", CLIENT, str(daemon.socket)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
            found[role] = user
        yield found
    finally:
        for user in found.values():
            if user.client is not None:
                user.client.stdin.close()  # type: ignore[union-attr]
                try:
                    user.client.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    user.client.kill()
                    user.client.wait()
                user.client.stdout.close()  # type: ignore[union-attr]
        for name in made:
            subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60)
        for name in made:
            with pytest.raises(KeyError):
                pwd.getpwnam(name)


@pytest.fixture
def alice(users: dict[str, User]) -> User:
    return users["alice"]


@pytest.fixture
def bob(users: dict[str, User]) -> User:
    return users["bob"]


@pytest.fixture(autouse=True)
def clean(daemon: Daemon) -> Iterator[None]:
    """Every test starts and ends with no container and only the shared images."""
    yield
    for c in daemon.request("GET", "/v1.44/containers/json?all=1").json():
        daemon.request("DELETE", f"/v1.44/containers/{c['Id']}?force=1")
    for image in daemon.request("GET", "/v1.44/images/json").json():
        if "base:latest" not in image["RepoTags"]:
            daemon.request("DELETE", f"/v1.44/images/{image['Id']}?force=1")


def test_the_socket_is_for_the_group_only(daemon: Daemon, sandbox_group: int,
                                          users: dict[str, User]) -> None:  # fmt: skip
    st = daemon.socket.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == sandbox_group
    reply = users["eve"].request("GET", "/_ping")
    assert reply["status"] == 0 and reply["errno"] == errno.EACCES, reply
    assert users["alice"].request("GET", "/_ping")["status"] == 200


def test_each_user_lists_only_their_own_containers(daemon: Daemon, alice: User,
                                                   bob: User) -> None:  # fmt: skip
    alice.run(["true"], name="of-alice")
    bob.create(["true"], name="of-bob")
    assert alice.container_names() == {"of-alice"}
    assert bob.container_names() == {"of-bob"}
    everything = daemon.request("GET", "/v1.44/containers/json?all=1").json()
    assert {c["Names"][0] for c in everything} == {"/of-alice", "/of-bob"}
    assert alice.request("GET", "/v1.44/info")["json"]["Containers"] == 1


# Every route that names a container, as (method, path); {} is the container.
CONTAINER_ROUTES = [
    ("GET", "/v1.44/containers/{}/json"),
    ("GET", "/v1.44/containers/{}/logs?stdout=1&stderr=1"),
    ("POST", "/v1.44/containers/{}/wait"),
    ("POST", "/v1.44/containers/{}/start"),
    ("POST", "/v1.44/containers/{}/attach?stream=1&stdout=1&stderr=1"),
    ("POST", "/v1.44/containers/{}/resize?h=24&w=80"),
    ("POST", "/v1.44/containers/{}/kill"),
    ("POST", "/v1.44/containers/{}/stop?t=0"),
    ("POST", "/v1.44/containers/{}/restart?t=0"),
    ("GET", "/v1.44/containers/{}/changes"),
    ("GET", "/v1.44/containers/{}/changes?detail=1"),
    ("GET", "/v1.44/containers/{}/stats?stream=0"),
    ("GET", "/v1.44/sandbox/containers/{}/stdin"),
    ("POST", "/v1.44/containers/{}/exec"),
    ("POST", "/v1.44/commit?container={}&repo=stolen&tag=1"),
    ("DELETE", "/v1.44/containers/{}?force=1"),
]


@pytest.mark.parametrize("owner_role", ["alice", "bob"])
def test_someone_elses_container_does_not_exist(daemon: Daemon, users: dict[str, User],
                                                owner_role: str) -> None:  # fmt: skip
    """Every route answers 404 ``No such container``, by ID, prefix or name, both ways."""
    owner = users[owner_role]
    other = users["bob" if owner_role == "alice" else "alice"]
    name = f"private-{owner_role}"
    cid = owner.create(["sh", "-c", "echo ready; exec sleep 60"], name=name)
    assert owner.request("POST", f"/v1.44/containers/{cid}/start")["status"] == 204
    daemon.wait_for_output(cid, b"ready")
    for ref in (cid, cid[:12], name):
        for method, path in CONTAINER_ROUTES:
            url = path.format(ref)
            body = {"Cmd": ["true"]} if url.endswith("/exec") else None
            reply = other.request(method, url, body)
            if reply["status"] == 404 and "page not found" in reply["body"]:
                continue  # a route this daemon does not have (yet)
            assert reply["status"] == 404, (method, url, reply)
            assert reply["json"] == {"message": f"No such container: {ref} (see `sandbox ps -a`)"}
    # None of that touched it; its owner still has it, running.
    state = owner.request("GET", f"/v1.44/containers/{cid}/json")["json"]["State"]
    assert state["Running"] is True
    assert other.container_names() == set()
    # A name is one namespace for all, but the refusal names no container.
    reply = other.request("POST", f"/v1.44/containers/create?name={name}",
                          {"Image": "base", "Cmd": ["true"]})  # fmt: skip
    assert reply["status"] == 409 and cid[:12] not in reply["body"], reply
    assert owner.request("DELETE", f"/v1.44/containers/{cid}?force=1")["status"] == 204


def test_an_id_prefix_is_unique_among_ones_own(daemon: Daemon, alice: User, bob: User) -> None:
    mine = alice.create(["true"])
    for _ in range(100):  # until bob has one whose ID starts as alice's does
        if bob.create(["true"])[0] == mine[0]:
            break
    else:
        pytest.fail("100 random IDs and none shares the first hex digit")
    reply = alice.request("GET", f"/v1.44/containers/{mine[0]}/json")
    assert reply["status"] == 200 and reply["json"]["Id"] == mine


def test_root_sees_and_removes_everything(daemon: Daemon, alice: User, bob: User) -> None:
    a, b = alice.create(["true"]), bob.create(["true"])
    for cid in (a, b):
        assert daemon.request("GET", f"/v1.44/containers/{cid}/json").status == 200
        assert daemon.request("DELETE", f"/v1.44/containers/{cid}").status == 204
    assert alice.container_names() == bob.container_names() == set()


def test_committed_images_belong_to_their_owner(daemon: Daemon, alice: User, bob: User) -> None:
    cid = alice.run(["sh", "-c", "echo mine > /alices-file"])
    reply = alice.request("POST", f"/v1.44/commit?container={cid}&repo=alice-tool&tag=1")
    assert reply["status"] == 201, reply
    image_id = reply["json"]["Id"]
    assert alice.image_tags() == {"base:latest", "alice-tool:1"}
    assert bob.image_tags() == {"base:latest"}  # the shared image, not alice's
    # To bob, alice's image does not exist, by name or by ID.
    for ref in ("alice-tool:1", image_id, image_id[7:19]):
        for method, path in [("GET", "/v1.44/images/{}/json"), ("GET", "/v1.44/images/{}/history"),
                             ("POST", "/v1.44/images/{}/tag?repo=mine"),
                             ("DELETE", "/v1.44/images/{}")]:  # fmt: skip
            got = bob.request(method, path.format(ref))
            assert got["status"] == 404 and "No such image" in got["body"], (method, ref, got)
        got = bob.request("POST", "/v1.44/containers/create", {"Image": ref, "Cmd": ["true"]})
        assert got["status"] == 404, got
    got = bob.request("POST", "/v1.44/images/create?fromImage=alice-tool&tag=1")
    assert got["status"] == 404, got
    # Nor can bob take its tag, or move the shared one.
    mine = bob.run(["true"])
    for repo, tag in (("alice-tool", "1"), ("base", "latest")):
        got = bob.request("POST", f"/v1.44/commit?container={mine}&repo={repo}&tag={tag}")
        assert got["status"] == 409 and "not yours" in got["body"], got
    # The shared image is read-only to him; his own commits are his.
    assert bob.request("DELETE", "/v1.44/images/base")["status"] == 403
    assert bob.request("POST", "/v1.44/images/base/tag?repo=bobs-base")["status"] == 403
    got = bob.request("POST", f"/v1.44/commit?container={mine}&repo=bob-tool")
    assert got["status"] == 201, got
    assert bob.request("POST", "/v1.44/images/bob-tool/tag?repo=bob-tool&tag=2")["status"] == 201
    assert bob.image_tags() == {"base:latest", "bob-tool:latest", "bob-tool:2"}
    assert alice.image_tags() == {"base:latest", "alice-tool:1"}
    # alice runs her image; root sees all of them.
    out = alice.create(["cat", "/alices-file"], image="alice-tool:1")
    assert alice.request("POST", f"/v1.44/containers/{out}/start")["status"] == 204
    assert alice.request("POST", f"/v1.44/containers/{out}/wait")["json"]["StatusCode"] == 0
    logs = alice.request("GET", f"/v1.44/containers/{out}/logs?stdout=1")
    assert "mine" in logs["body"]
    everything = daemon.request("GET", "/v1.44/images/json").json()
    assert {t for i in everything for t in i["RepoTags"]} >= {"alice-tool:1", "bob-tool:2"}
    assert daemon.request("GET", "/v1.44/images/alice-tool:1/json").status == 200
    assert alice.request("DELETE", "/v1.44/containers/" + out)["status"] == 204
    assert alice.request("DELETE", "/v1.44/containers/" + cid)["status"] == 204
    got = alice.request("DELETE", "/v1.44/images/alice-tool:1")
    assert got["status"] == 200, got
    assert alice.image_tags() == {"base:latest"}


def test_docker_py_as_two_users(daemon: Daemon, alice: User, bob: User) -> None:
    pytest.importorskip("docker", reason="docker-py is not installed (pip install docker)")
    seen = {}
    for user in (alice, bob):
        proc = user.popen(["-c", DOCKER_PY, daemon.url, f"hi-{user.name}",
                           f"kept-{user.name}"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)  # fmt: skip
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen[user.name] = json.loads(out)
    for user in (alice, bob):
        assert seen[user.name]["output"] == f"hi-{user.name}\n"
        assert seen[user.name]["containers"] == [f"kept-{user.name}"]
        assert seen[user.name]["images"] == ["base:latest"]
