"""Concurrency: 30 clients run containers at once, and the daemon keeps answering.

Each client is a docker-py client in a thread of its own, running a
container that prints a token only it knows and checking that it gets
exactly its own output back. Meanwhile another thread pings the daemon in a
loop: every ping must come back (within a generous 10 s: the point is that
the event loop is never stuck, not a latency target), and the slowest is
recorded in the test's properties and output.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from .helpers import Daemon

docker = pytest.importorskip("docker", reason="docker-py is not installed (pip install docker)")

pytestmark = pytest.mark.root

CLIENTS = 30
PING_TIMEOUT = 10.0  # seconds any single ping may take


@pytest.fixture
def pinger(daemon: Daemon) -> Iterator[list[float]]:
    """Ping the daemon in a loop for the test's duration; yields the round trips (ms)."""
    trips: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                reply = daemon.request("GET", "/_ping", timeout=PING_TIMEOUT)
                assert reply.status == 200 and reply.body == b"OK", reply
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append(exc)
                return
            trips.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)

    thread = threading.Thread(target=loop, name="pinger", daemon=True)
    thread.start()
    try:
        yield trips
    finally:
        done.set()
        thread.join(timeout=PING_TIMEOUT + 5)
    assert not errors, f"a ping failed while the clients ran: {errors[0]!r}"


def test_thirty_clients_at_once_get_their_own_output(
    daemon: Daemon, pinger: list[float], record_property: pytest.RecordProperty
) -> None:
    barrier = threading.Barrier(CLIENTS)
    results: dict[int, bytes | BaseException] = {}

    def client(n: int) -> None:
        token = f"token-{n}-{os.urandom(8).hex()}"
        api = docker.DockerClient(base_url=daemon.url, timeout=120)
        try:
            barrier.wait(timeout=60)
            cmd = ["sh", "-c", f"echo {token}; echo not-stdout-{n} >&2"]
            out = api.containers.run("base", cmd, remove=True, name=f"client-{n}")
            results[n] = b"ok" if out == f"{token}\n".encode() else out
        except BaseException as exc:
            results[n] = exc
        finally:
            api.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    elapsed = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "some clients never finished"
    wrong = {n: r for n, r in results.items() if r != b"ok"}
    assert not wrong, f"{len(wrong)} of {CLIENTS} clients got something else: {wrong}"
    assert len(results) == CLIENTS

    assert pinger, "no ping completed while the clients ran"
    slowest = max(pinger)
    record_property("clients_seconds", round(elapsed, 2))
    record_property("pings", len(pinger))
    record_property("max_ping_ms", round(slowest, 1))
    print(f"\n{CLIENTS} clients in {elapsed:.2f} s; {len(pinger)} pings, "
          f"slowest {slowest:.1f} ms")  # fmt: skip
    assert slowest < PING_TIMEOUT * 1000

    # Nothing is left: no container, no running marker (and, as no_leaks checks
    # after every test, no process, cgroup or mount).
    assert daemon.request("GET", "/v1.44/containers/json?all=1").json() == []
    assert not os.listdir(daemon.root / "running")
