"""docker-py (the real ``docker`` package) against sandboxd."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .helpers import Daemon

docker = pytest.importorskip("docker", reason="docker-py is not installed (pip install docker)")

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=daemon.url, timeout=60)
    yield c
    c.close()


def test_version_is_negotiated(client: docker.DockerClient) -> None:
    assert client.api.api_version == "1.44"
    assert client.ping() is True


def test_run_returns_the_output(client: docker.DockerClient) -> None:
    assert client.containers.run("base", "echo hi") == b"hi\n"
    assert client.containers.run("base", "echo bye", remove=True) == b"bye\n"
    for container in client.containers.list(all=True):
        container.remove()


def test_run_keeps_stderr_apart(client: docker.DockerClient) -> None:
    cmd = ["sh", "-c", "echo out; echo err >&2"]
    assert client.containers.run("base", cmd, stdout=False, stderr=True, remove=True) == b"err\n"
    assert client.containers.run("base", cmd, remove=True) == b"out\n"


def test_run_of_a_failing_command_raises_container_error(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.ContainerError) as caught:
        client.containers.run("base", ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
    assert caught.value.exit_status == 3
    assert b"bad" in caught.value.stderr


def test_detach_wait_and_logs(client: docker.DockerClient) -> None:
    container = client.containers.run(
        "base", ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"], detach=True
    )
    try:
        assert list(container.logs(stream=True, follow=True)) == [b"1\n", b"2\n", b"3\n"]
        assert container.wait() == {"StatusCode": 0, "Error": None}
        assert container.logs() == b"1\n2\n3\n"
        assert container.logs(tail=1) == b"3\n"
        container.reload()
        assert container.status == "exited"
    finally:
        container.remove()


def test_stop_and_remove_by_force(client: docker.DockerClient) -> None:
    cmd = ["sh", "-c", "echo ready; exec sleep 30"]
    container = client.containers.run("base", cmd, detach=True, name="py-sleeper")
    try:
        assert client.containers.get("py-sleeper").status == "running"
        # Signals sent before the init has set up its handlers are lost (as with tini).
        deadline = time.monotonic() + 30
        while container.logs() != b"ready\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c.id for c in client.containers.list()] == [container.id]
        container.stop(timeout=5)
        assert container.wait()["StatusCode"] == 143
        restarted = client.containers.get(container.id)
        restarted.start()
        with pytest.raises(docker.errors.APIError) as caught:
            restarted.remove()
        assert caught.value.status_code == 409
    finally:
        container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("py-sleeper")


def test_attach_before_start_loses_nothing(client: docker.DockerClient) -> None:
    container = client.containers.create("base", ["sh", "-c", "echo attached; echo err >&2"])
    try:
        # The request is made here, before the start; the output is read after it.
        params = {"stdout": 1, "stderr": 1, "stream": 1}
        sock = client.api.attach_socket(container.id, params=params)
        raw = sock._sock  # docker-py's SocketIO forgets the socket when closed
        try:
            container.start()
            frames = list(docker.utils.socket.frames_iter(sock, tty=False))
        finally:
            sock.close()
            raw.close()
        assert b"".join(data for stream, data in frames if stream == 1) == b"attached\n"
        assert b"".join(data for stream, data in frames if stream == 2) == b"err\n"
    finally:
        container.remove(force=True)


def test_diff_commit_and_images(client: docker.DockerClient) -> None:
    container = client.containers.run("base", ["sh", "-c", "echo x > /tmp/f"], detach=True)
    try:
        container.wait()
        changes = {c["Path"]: c["Kind"] for c in container.diff()}
        assert changes == {"/tmp": 0, "/tmp/f": 1}
        image = container.commit(repository="py-image", tag="1", message="from docker-py")
        assert image.tags == ["py-image:1"]
        assert client.images.get("py-image:1").id == image.id
        assert any(i.id == image.id for i in client.images.list())
        assert client.images.get("base").tags == ["base:latest"]
        history = image.history()
        assert history[0]["Comment"] == "from docker-py"
        assert client.containers.run("py-image:1", "cat /tmp/f", remove=True) == b"x\n"
        image.tag("py-image", "2")
        assert sorted(client.images.get(image.id).tags) == ["py-image:1", "py-image:2"]
        client.images.remove("py-image:2")
        client.images.remove("py-image:1")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("py-image:1")
    finally:
        container.remove()


def test_unknown_image_is_image_not_found(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nosuch:1")
    with pytest.raises(docker.errors.NotFound):
        client.containers.run("nosuch:1", "true", remove=True)
