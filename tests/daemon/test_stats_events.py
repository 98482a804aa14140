"""Stats and events through the API, docker-py and the docker CLI, with real containers.

CPU figures are checked as the docker CLI computes them (a ratio of two
counter deltas) with wide bounds; nothing here asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .helpers import TEMP_PREFIX, Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.root

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
MiB = 1024 * 1024
# Waits for a USR1, then holds 50 MiB in a shell variable until killed.
ALLOCATE_ON_USR1 = (
    "trap 'x=$(head -c 50m /dev/zero | tr \"\\0\" a); echo allocated' USR1; "
    "echo ready; while :; do sleep 0.1; done"
)
BUSY = "echo ready; while :; do :; done"
HOG = "echo ready; x=$(head -c 200m /dev/zero | tr '\\0' a); echo survived"


@pytest.fixture
def containers(daemon: Daemon) -> Iterator[Callable[..., str]]:
    """``run(cmd, **create_fields)`` creates and starts a container, removed at the end."""
    made: list[str] = []

    def run(cmd: str, *, start: bool = True, **extra: Any) -> str:
        cid = daemon.create(["sh", "-c", cmd], **extra)
        made.append(cid)
        if start:
            reply = daemon.request("POST", f"/v1.44/containers/{cid}/start")
            assert reply.status == 204, reply.body
        return cid

    yield run
    for cid in made:
        daemon.request("DELETE", f"/v1.44/containers/{cid}?force=1")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stats(daemon: Daemon, cid: str, query: str = "stream=0") -> dict[str, Any]:
    reply = daemon.request("GET", f"/v1.44/containers/{cid}/stats?{query}")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    return reply.json()  # type: ignore[no-any-return]


def stream(daemon: Daemon, url: str, timeout: float = 30) -> Iterator[dict[str, Any]]:
    """The JSON lines of a streamed reply, until the daemon ends it."""
    conn = daemon.connection(timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.headers["Transfer-Encoding"] == "chunked"
        while line := resp.readline():
            yield json.loads(line)
        assert resp.isclosed()  # the last chunk came: a clean end, not a cut
    finally:
        conn.close()


def cpu_percent(sample: dict[str, Any]) -> float:
    """CPU % exactly as the docker CLI computes it (cli/command/container/stats_helpers.go)."""
    cpu, pre = sample["cpu_stats"], sample["precpu_stats"]
    cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    system_delta = cpu["system_cpu_usage"] - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [])
    assert system_delta > 0 and cpu_delta >= 0, sample
    return cpu_delta / system_delta * online * 100.0


def memory_used(sample: dict[str, Any]) -> int:
    """Memory in use as the docker CLI shows it (page cache that can go left out)."""
    mem = sample["memory_stats"]
    inactive = mem["stats"].get("total_inactive_file", mem["stats"].get("inactive_file", 0))
    return int(mem["usage"] - inactive) if inactive < mem["usage"] else int(mem["usage"])


def events_between(daemon: Daemon, since: float, until: float, filters: dict[str, Any]) -> list:
    query = f"since={since:.9f}&until={until:.9f}&filters={quote(json.dumps(filters))}"
    reply = daemon.request("GET", f"/v1.44/events?{query}")
    assert reply.status == 200, reply.body
    return [json.loads(line) for line in reply.body.splitlines()]


# -- stats: the raw API --------------------------------------------------------------


def test_stats_have_the_fields_docker_reads(daemon: Daemon, containers: Callable[..., str]) -> None:
    name = unique("shape")
    cid = containers(ALLOCATE_ON_USR1, name=name,
                     HostConfig={"Memory": 256 * MiB, "PidsLimit": 50})  # fmt: skip
    daemon.wait_for_output(cid, b"ready")
    sample = stats(daemon, cid)
    assert (sample["id"], sample["name"]) == (cid, f"/{name}")
    for key in ("read", "preread", "pids_stats", "blkio_stats", "num_procs", "cpu_stats",
                "precpu_stats", "memory_stats", "networks"):  # fmt: skip
        assert key in sample, key
    assert sample["preread"] != "0001-01-01T00:00:00Z" and sample["preread"] < sample["read"]
    assert sample["pids_stats"]["current"] >= 1 and sample["pids_stats"]["limit"] == 50
    assert sample["networks"] == {} and sample["num_procs"] == 0
    assert sample["blkio_stats"]["io_service_bytes_recursive"] == []
    cpu = sample["cpu_stats"]
    assert cpu["online_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert set(cpu["cpu_usage"]) >= {"total_usage", "usage_in_kernelmode", "usage_in_usermode"}
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    assert cpu["system_cpu_usage"] > sample["precpu_stats"]["system_cpu_usage"] > 0
    assert cpu["cpu_usage"]["total_usage"] >= sample["precpu_stats"]["cpu_usage"]["total_usage"]
    mem = sample["memory_stats"]
    assert mem["limit"] == 256 * MiB
    assert 0 < mem["usage"] <= mem["max_usage"]
    assert "total_inactive_file" in mem["stats"] or "inactive_file" in mem["stats"]

    before = memory_used(sample)
    assert daemon.request("POST", f"/v1.44/containers/{cid}/kill?signal=USR1").status == 204
    daemon.wait_for_output(cid, b"allocated")
    after = memory_used(stats(daemon, cid, "stream=0&one-shot=1"))
    assert after - before >= 45 * MiB, (before, after)


def test_one_shot_has_no_previous_sample(daemon: Daemon, containers: Callable[..., str]) -> None:
    cid = containers("echo ready; sleep 60")
    daemon.wait_for_output(cid, b"ready")
    sample = stats(daemon, cid, "stream=0&one-shot=1")
    assert sample["preread"] == "0001-01-01T00:00:00Z"
    assert sample["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert sample["memory_stats"]["limit"] > 0  # no limit: the host's memory


def test_stats_of_a_container_not_running_are_its_id_and_name(
    daemon: Daemon, containers: Callable[..., str]
) -> None:
    name = unique("idle")
    cid = containers("true", start=False, name=name)
    for query in ("stream=0", "stream=1", "stream=0&one-shot=1"):
        assert stats(daemon, cid, query) == {"id": cid, "name": f"/{name}"}


def test_bad_stats_queries_are_a_400(daemon: Daemon, containers: Callable[..., str]) -> None:
    cid = containers("true", start=False)
    for query in ("interval=0.01", "interval=fast", "stream=1&one-shot=1"):
        reply = daemon.request("GET", f"/v1.44/containers/{cid}/stats?{query}")
        assert reply.status == 400, query
        assert reply.json()["message"]
    assert daemon.request("GET", "/v1.44/containers/nonesuch/stats?stream=0").status == 404


def busy_percent(daemon: Daemon, cid: str) -> float:
    """The median CPU % of three streamed samples a second apart, as the CLI computes it."""
    daemon.wait_for_output(cid, b"ready")
    samples = stream(daemon, f"/v1.44/containers/{cid}/stats?interval=1")
    taken = [next(samples) for _ in range(4)][1:]  # the first may have no precpu
    samples.close()
    # Each object's precpu_stats is the object before it.
    assert taken[1]["precpu_stats"] == taken[0]["cpu_stats"]
    assert taken[1]["preread"] == taken[0]["read"]
    daemon.request("POST", f"/v1.44/containers/{cid}/kill")
    return sorted(cpu_percent(s) for s in taken)[1]


def test_cpu_percent_of_a_busy_loop_is_one_cpu_and_half_under_nano_cpus(
    daemon: Daemon, containers: Callable[..., str]
) -> None:
    # One at a time: together with the rest of the host they could share the CPUs.
    full = busy_percent(daemon, containers(BUSY))
    half_cid = containers(BUSY, HostConfig={"NanoCpus": 500_000_000})
    throttling = stats(daemon, half_cid)["cpu_stats"]["throttling_data"]
    half = busy_percent(daemon, half_cid)
    assert 50 < full < 140, (full, half)
    assert 20 < half < 65, (full, half)
    assert throttling["throttled_periods"] > 0 and throttling["periods"] > 0


def test_the_stream_ends_cleanly_when_the_container_exits(
    daemon: Daemon, containers: Callable[..., str]
) -> None:
    cid = containers("echo ready; sleep 1.5")
    daemon.wait_for_output(cid, b"ready")
    samples = list(stream(daemon, f"/v1.44/containers/{cid}/stats?interval=0.1"))
    assert samples and all(s["id"] == cid for s in samples)
    state = daemon.request("GET", f"/v1.44/containers/{cid}/json").json()["State"]
    assert state["Running"] is False


def test_a_client_that_leaves_a_stream_costs_nothing_more(
    daemon: Daemon, containers: Callable[..., str]
) -> None:
    cid = containers("echo ready; sleep 60")
    daemon.wait_for_output(cid, b"ready")
    for _ in range(3):
        samples = stream(daemon, f"/v1.44/containers/{cid}/stats?interval=0.1")
        next(samples)
        samples.close()
    assert stats(daemon, cid, "stream=0&one-shot=1")["id"] == cid  # still answers


# -- events: the raw API -------------------------------------------------------------


def test_events_of_a_run_with_auto_remove(daemon: Daemon, containers: Callable[..., str]) -> None:
    since = time.time()
    name = unique("events")
    cid = containers("exit 3", name=name, Labels={"course": "unix"},
                     HostConfig={"AutoRemove": True})  # fmt: skip
    while daemon.request("GET", f"/v1.44/containers/{cid}/json").status != 404:
        time.sleep(0.05)  # until the daemon removed it
    found = events_between(daemon, since, time.time(), {"container": [name]})
    assert [e["Action"] for e in found] == ["create", "start", "die", "destroy"]
    die = found[2]
    assert die["Type"] == "container" and die["scope"] == "local"
    assert die["Actor"]["ID"] == cid and die["id"] == cid and die["status"] == "die"
    assert die["Actor"]["Attributes"]["exitCode"] == "3"
    assert die["Actor"]["Attributes"]["name"] == name
    assert die["Actor"]["Attributes"]["image"] == die["from"] == "base"
    assert die["time"] == die["timeNano"] // 10**9
    assert [e["timeNano"] for e in found] == sorted(e["timeNano"] for e in found)
    assert die["Actor"]["Attributes"]["course"] == "unix"  # labels are attributes
    labelled = events_between(daemon, since, time.time(), {"label": ["course=unix"]})
    assert [e["Actor"]["ID"] for e in labelled] == [cid] * 4


def test_an_oom_kill_is_an_oom_event_then_die_137(
    daemon: Daemon, containers: Callable[..., str]
) -> None:
    since = time.time()
    cid = containers(HOG, HostConfig={"Memory": 32 * MiB, "MemorySwap": 32 * MiB})
    reply = daemon.request("POST", f"/v1.44/containers/{cid}/wait")
    assert reply.json()["StatusCode"] == 137
    found = events_between(daemon, since, time.time(), {"container": [cid]})
    actions = [e["Action"] for e in found]
    assert actions == ["create", "start", "oom", "die"], actions
    assert found[3]["Actor"]["Attributes"]["exitCode"] == "137"


def test_events_stream_live_with_filters(daemon: Daemon, containers: Callable[..., str]) -> None:
    name = unique("live")
    filters = quote(json.dumps({"type": ["container"], "container": [name],
                                "event": ["start", "kill"]}))  # fmt: skip
    got: list[dict[str, Any]] = []
    ready = threading.Event()

    def follow() -> None:
        conn = daemon.connection(30)
        conn.request("GET", f"/v1.44/events?filters={filters}")
        resp = conn.getresponse()  # the headers come at once
        ready.set()
        while line := resp.readline():
            got.append(json.loads(line))
            if got[-1]["Action"] == "kill":
                break
        conn.close()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert ready.wait(10)
    cid = containers("echo ready; sleep 60", name=name)
    daemon.wait_for_output(cid, b"ready")
    assert daemon.request("POST", f"/v1.44/containers/{cid}/kill?signal=TERM").status == 204
    thread.join(20)
    assert not thread.is_alive()
    assert [e["Action"] for e in got] == ["start", "kill"]
    assert got[1]["Actor"]["Attributes"]["signal"] == "15"


def test_image_events_and_commit(daemon: Daemon, containers: Callable[..., str]) -> None:
    since = time.time()
    cid = containers("echo hi > /f")
    daemon.request("POST", f"/v1.44/containers/{cid}/wait")
    repo = unique("evimg")
    reply = daemon.request("POST", f"/v1.44/commit?container={cid}&repo={repo}&tag=1&comment=c1")
    assert reply.status == 201, reply.body
    image_id = reply.json()["Id"]
    assert daemon.request("POST", f"/v1.44/images/{repo}:1/tag?repo={repo}&tag=2").status == 201
    assert daemon.request("DELETE", f"/v1.44/images/{repo}:1").status == 200
    assert daemon.request("DELETE", f"/v1.44/images/{repo}:2").status == 200
    until = time.time()
    found = events_between(daemon, since, until, {"type": ["image"]})
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in found] == [
        ("tag", f"{repo}:1"),
        ("tag", f"{repo}:2"),
        ("untag", f"{repo}:1"),
        ("untag", f"{repo}:2"),
        ("delete", f"{repo}:2"),
    ]
    assert all(e["Actor"]["ID"] == image_id for e in found)
    commit = events_between(daemon, since, until, {"event": ["commit"]})
    assert len(commit) == 1 and commit[0]["Actor"]["ID"] == cid
    assert commit[0]["Actor"]["Attributes"]["imageID"] == image_id
    assert commit[0]["Actor"]["Attributes"]["comment"] == "c1"


def test_until_in_the_past_ends_the_stream_and_bad_queries_are_a_400(daemon: Daemon) -> None:
    reply = daemon.request("GET", f"/v1.44/events?until={time.time() - 1:.3f}", timeout=10)
    assert reply.status == 200
    for query in ("since=yesterday", "until=-1", "filters=" + quote('{"colour":["red"]}')):
        reply = daemon.request("GET", f"/v1.44/events?{query}")
        assert reply.status == 400, query
        assert reply.json()["message"]


# -- docker-py ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[Any]:
    docker = pytest.importorskip("docker", reason="docker-py is not installed")
    c = docker.DockerClient(base_url=daemon.url, timeout=60)
    yield c
    c.close()


def test_docker_py_stats_one_shot_and_streaming(client: Any, daemon: Daemon) -> None:
    container = client.containers.run("base", ["sh", "-c", BUSY], detach=True,
                                      mem_limit="64m")  # fmt: skip
    try:
        daemon.wait_for_output(container.id, b"ready")
        sample = container.stats(stream=False)
        assert sample["memory_stats"]["limit"] == 64 * MiB
        assert cpu_percent(sample) > 30
        live = container.stats(decode=True)
        first, second = next(live), next(live)
        assert second["precpu_stats"] == first["cpu_stats"]
        container.kill()
        assert list(live) == [] or all(s["id"] == container.id for s in live)
    finally:
        container.remove(force=True)


def test_docker_py_events_follow_a_run(client: Any) -> None:
    docker = pytest.importorskip("docker")
    name = unique("pyev")
    events = client.events(decode=True, filters={"container": name})
    got: list[dict[str, Any]] = []

    def follow() -> None:
        for event in events:
            got.append(event)
            if event["Action"] == "destroy":
                break

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    with pytest.raises(docker.errors.ContainerError):
        client.containers.run("base", ["sh", "-c", "exit 4"], name=name, remove=True)
    thread.join(20)
    events.close()
    assert [e["Action"] for e in got] == ["create", "start", "die", "destroy"]
    assert got[2]["Actor"]["Attributes"]["exitCode"] == "4"


# -- the docker CLI -------------------------------------------------------------------


@pytest.fixture
def docker_cli(daemon: Daemon) -> Callable[..., subprocess.CompletedProcess[str]]:
    if not os.path.exists(DOCKER):
        pytest.skip("the docker CLI is not installed")
    config = daemon.dir / "docker-config"
    config.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_CONFIG=str(config), DOCKER_CLI_HINTS="false", NO_COLOR="1")

    def run(*args: str, api: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = {"DOCKER_API_VERSION": api} if api else {}
        return subprocess.run([DOCKER, "-H", daemon.url, *args], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    return run


def test_docker_stats_no_stream_prints_cpu_and_memory(
    docker_cli: Callable[..., subprocess.CompletedProcess[str]],
    daemon: Daemon,
    containers: Callable[..., str],
) -> None:
    name = unique("clistats")
    cid = containers(BUSY, name=name, HostConfig={"Memory": 64 * MiB})
    daemon.wait_for_output(cid, b"ready")
    result = docker_cli("stats", "--no-stream", name)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert "CPU %" in header and "MEM USAGE / LIMIT" in header
    assert row.startswith(cid[:12]) and name in row
    assert re.search(r"[\d.]+[KMG]iB / 64MiB", row) and re.search(r"[\d.]+%", row), row
    fmt = "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}"
    result = docker_cli("stats", "--no-stream", "--format", fmt)  # every running container
    rows = [line.split("|") for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stderr
    mine = [r for r in rows if r[0] == name]
    assert len(mine) == 1, rows
    assert float(mine[0][1].rstrip("%")) > 30
    assert mine[0][2].endswith(" / 64MiB") and int(mine[0][3]) >= 1


def test_docker_events_shows_a_run(
    docker_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    name = unique("clievents")
    since = f"{time.time():.3f}"
    assert docker_cli("run", "--rm", "--name", name, "base", "sh", "-c", "exit 2").returncode == 2
    result = docker_cli("events", "--since", since, "--until", f"{time.time():.3f}",
                        "--filter", f"container={name}", "--format", "{{json .}}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["Action"] for e in found] == ["create", "start", "die", "destroy"]
    assert found[2]["Actor"]["Attributes"]["exitCode"] == "2"


def test_docker_run_below_api_1_30_waits_through_events(
    docker_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = docker_cli("run", "--rm", "base", "sh", "-c", "echo old; exit 5", api="1.29")
    assert (result.returncode, result.stdout) == (5, "old\n"), result.stderr
    assert docker_cli("ps", "-aq").stdout == ""


# -- the daemon's shutdown ---------------------------------------------------------------


def test_sigterm_ends_open_stats_and_events_streams() -> None:
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        d = start_daemon(tmp)
        results: dict[str, list[dict[str, Any]]] = {"events": [], "stats": []}
        try:
            cid = d.create(["sh", "-c", "echo ready; sleep 300"])
            assert d.request("POST", f"/v1.44/containers/{cid}/start").status == 204
            d.wait_for_output(cid, b"ready")

            def read(key: str, url: str) -> None:
                for item in stream(d, url, timeout=30):
                    results[key].append(item)

            urls = {"events": "/v1.44/events", "stats": f"/v1.44/containers/{cid}/stats"}
            readers = [
                threading.Thread(target=read, args=item, daemon=True) for item in urls.items()
            ]
            for reader in readers:
                reader.start()
            while not results["stats"]:  # the stats stream is open
                time.sleep(0.05)
            # Events the events stream sees once it follows (its thread may
            # not have subscribed yet: a marker every 0.2 s until one is seen).
            markers = 0
            while not results["events"]:
                d.create(["true"], name=f"marker-{markers}")
                markers += 1
                for _ in range(4):
                    if results["events"]:
                        break
                    time.sleep(0.05)
        finally:
            stop_daemon(d)
        for reader in readers:
            reader.join(20)
            assert not reader.is_alive()
        assert results["stats"] and results["stats"][0]["id"] == cid
        actions = [e["Action"] for e in results["events"]]
        assert actions[-2:] == ["kill", "die"], actions
        assert set(actions[:-2]) == {"create"}, actions
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the pieces, without a daemon ---------------------------------------------------------


def test_a_slow_subscriber_loses_events_and_never_blocks_the_engine() -> None:
    from sandbox.engine.events import EventBus

    bus = EventBus(history=5)

    async def scenario() -> None:
        with bus.subscribe(size=3) as slow, bus.subscribe() as fast:
            for n in range(10):
                bus.emit("container", "start", f"c{n}", {"name": f"n{n}"})
            assert slow.dropped == 7 and fast.dropped == 0
            assert [(await slow.get())[1]["Actor"]["ID"] for _ in range(3)] == ["c0", "c1", "c2"]
        assert not bus._subscribers  # closed subscriptions are forgotten

    asyncio.run(scenario())
    assert [event["Actor"]["ID"] for _, event in bus.history()] == [f"c{n}" for n in range(5, 10)]


def test_event_filters_read_as_docker_reads_them() -> None:
    from sandbox.daemon.routes.events import matcher
    from sandbox.engine.events import EventBus

    bus = EventBus()
    die = bus.emit("container", "die", "abc123", {"name": "web1", "image": "base", "exitCode": "0"})
    tag = bus.emit("image", "tag", "sha256:feed01", {"name": "base:latest"})
    cases = [
        ({"type": ["container"]}, [die]),
        ({"type": ["container", "image"]}, [die, tag]),
        ({"event": ["die", "start"]}, [die]),
        ({"container": ["abc"]}, [die]),  # an ID prefix
        ({"container": ["web"]}, [die]),  # a name prefix
        ({"container": ["nope"]}, []),
        ({"image": ["base"]}, [die, tag]),
        ({"image": ["feed01"]}, [tag]),
        ({"label": ["exitCode=0"]}, [die]),
        ({"scope": ["local"], "type": ["image"]}, [tag]),
    ]
    for filters, expected in cases:
        matches = matcher(filters)
        assert [e for e in (die, tag) if matches(e)] == expected, filters


def test_docker_stats_caps_the_limit_at_the_host_memory_and_leaves_percpu_to_v1() -> None:
    from sandbox.daemon.routes.stats import Sample, docker_stats
    from sandbox.runtime.cgroups import CgroupStats
    from sandbox.store.containers import ContainerRecord

    record = ContainerRecord(id="c" * 64, name="n", image_id="i", image="base", layers=[],
                             cmd=["true"], env=[])  # fmt: skip
    v2 = CgroupStats(memory_usage=10, memory_limit=None, cpu_usage_ns=5,
                     memory_stat={"inactive_file": 3})  # fmt: skip
    out = docker_stats(record, Sample(1, 1.0, v2, 100), None, online_cpus=2, mem_total=1000)
    assert out["memory_stats"]["limit"] == 1000
    assert out["memory_stats"]["stats"] == {"inactive_file": 3}
    assert "percpu_usage" not in out["cpu_stats"]["cpu_usage"]
    assert out["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert out["read"] == "1970-01-01T00:00:00.000000001Z"
    v1 = CgroupStats(memory_limit=1 << 40, cpu_percpu_ns=[1, 2], pids_limit=7)
    out = docker_stats(record, Sample(2, 2.0, v1, 200), None, online_cpus=2, mem_total=1000)
    assert out["memory_stats"]["limit"] == 1000
    assert out["cpu_stats"]["cpu_usage"]["percpu_usage"] == [1, 2]
    assert out["pids_stats"] == {"current": 0, "limit": 7}
