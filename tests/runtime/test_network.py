"""Networks for real: bridges in namespaces of their own, veth pairs, names, ports.

Every test runs real containers through the CLI and its daemon, and sends
traffic only inside the project's namespaces, or to the host's loopback for
a published port. The suite's leak fixture checks that no network namespace
(held by a process or an fd), host link, mount or process outlives a test.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

# An echo server in the OpenBSD netcat of the base image: what a client sends
# comes back (nc reads and writes one fifo, opened read-write so that opening
# it does not wait for a writer), one client at a time.
ECHO_SERVER = "mkfifo /tmp/f; while true; do nc -l -p 7000 0<>/tmp/f 1>&0; done"
# Retries until the server listens (no fixed sleeps): up to 10 s.
RETRY = "for i in $(seq 200); do {cmd} && exit 0; sleep 0.05; done; exit 1"


def run(cli, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    result = cli(*args)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def inspect(cli, name: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    code, out, err = run(cli, "inspect", name)
    assert code == 0, err
    data = json.loads(out)
    return data[0] if isinstance(data, list) else data


def address(cli, name: str, network: str = "lab") -> str:  # type: ignore[no-untyped-def]
    return inspect(cli, name)["NetworkSettings"]["Networks"][network]["IPAddress"]


@pytest.fixture
def network(cli) -> Iterator[Callable[..., str]]:  # type: ignore[no-untyped-def]
    """``network()`` makes a network of the test's own; removed afterwards."""
    made: list[str] = []

    def make(*opts: str) -> str:
        name = f"net-{uuid.uuid4().hex[:8]}"
        code, _, err = run(cli, "network", "create", *opts, name)
        assert code == 0, err
        made.append(name)
        return name

    yield make
    for name in made:
        cli("network", "rm", name)


def test_tcp_echo_answered_from_another_container_by_name(cli, names) -> None:  # type: ignore[no-untyped-def]
    server = names("echo")
    code, _, err = run(cli, "run", "-d", "--name", server, "--network", "lab", "base",
                       "bash", "-c", ECHO_SERVER)  # fmt: skip
    assert code == 0, err
    ask = RETRY.format(cmd=f"echo hello-$RANDOM-tcp | tee /tmp/sent | nc -N -w2 {server} 7000 "
                           "> /tmp/got && [ -s /tmp/got ]")  # fmt: skip
    report = f'( {ask} ); rc=$?; echo "$(cat /tmp/sent) $(cat /tmp/got) $rc"'
    code, out, err = run(cli, "run", "--rm", "--network", "lab", "base", "bash", "-c", report)
    assert code == 0, err
    sent, got, rc = out.split()
    assert rc == "0" and sent == got and sent.startswith("hello-")


def test_udp_datagram_reaches_a_container_by_name(cli, names) -> None:  # type: ignore[no-untyped-def]
    server = names("udp")
    code, _, err = run(cli, "run", "-d", "--name", server, "--network", "lab", "base",
                       "bash", "-c", "nc -u -l -p 9000 > /tmp/got")  # fmt: skip
    assert code == 0, err
    send = RETRY.format(cmd=f"echo datagram-1 | nc -u -w1 {server} 9000")
    code, _, err = run(cli, "run", "--rm", "--network", "lab", "base", "bash", "-c", send)
    assert code == 0, err
    deadline = time.monotonic() + 10
    got = ""
    while time.monotonic() < deadline and "datagram-1" not in got:
        code, got, _ = run(cli, "exec", server, "cat", "/tmp/got")
        time.sleep(0.05)
    assert "datagram-1" in got


def test_addresses_names_and_routes_inside(cli, names) -> None:  # type: ignore[no-untyped-def]
    first, second = names("a"), names("b")
    for name in (first, second):
        code, _, err = run(cli, "run", "-d", "--name", name, "--network", "lab",
                           "--network-alias", f"{name}-alias", "base", "sleep", "300")  # fmt: skip
        assert code == 0, err
    settings = inspect(cli, first)["NetworkSettings"]["Networks"]["lab"]
    assert settings["IPAddress"].startswith("10.200.0.") and settings["IPPrefixLen"] == 24
    assert settings["Gateway"] == "10.200.0.1"
    octets = [int(o) for o in settings["IPAddress"].split(".")]
    assert settings["MacAddress"] == "02:42:" + ":".join(f"{o:02x}" for o in octets)
    assert address(cli, first) != address(cli, second)
    code, out, err = run(cli, "exec", first, "bash", "-c",
                         "ip -br link; ip route; cat /etc/hosts")  # fmt: skip
    assert code == 0, err
    links = sorted(line.split()[0].split("@")[0] for line in out.splitlines() if "UP" in line
                   or "UNKNOWN" in line)  # fmt: skip
    assert links == ["eth0", "lo"]
    assert "default via 10.200.0.1 dev eth0" in out
    assert f"{address(cli, second)}\t{second} {second}-alias" in out
    code, out, _ = run(cli, "exec", first, "ping", "-c1", "-W2", f"{second}-alias")
    assert code == 0 and "1 received" in out
    code, out, _ = run(cli, "exec", first, "getent", "hosts", second)
    assert code == 0 and out.split()[0] == address(cli, second)


def test_networks_are_isolated_from_each_other(cli, names, network) -> None:  # type: ignore[no-untyped-def]
    red, blue = network(), network("--subnet", "10.201.7.0/24")
    server = names("srv")
    code, _, err = run(cli, "run", "-d", "--name", server, "--network", red, "base",
                       "bash", "-c", ECHO_SERVER)  # fmt: skip
    assert code == 0, err
    ip = address(cli, server, red)
    reach = RETRY.format(cmd=f"echo x | nc -N -w1 {ip} 7000 | grep -q x")
    code, _, _ = run(cli, "run", "--rm", "--network", red, "base", "bash", "-c", reach)
    assert code == 0, "a container on the same network must reach the server"
    # The probe the other networks get, from the same network: it succeeds
    # (retried: the server's loop is deaf for a moment between two clients),
    # so its failure below means no path, not a probe that cannot succeed.
    same = " && ".join(f"( {RETRY.format(cmd=f'nc -z -w1 {to} 7000')} )" for to in (server, ip))
    code, _, _ = run(cli, "run", "--rm", "--network", red, "base", "bash", "-c", same)
    assert code == 0, "nc -z must reach the server by name and by address from its network"
    # From the other network: no name, no route to the address.
    code, out, _ = run(cli, "run", "--rm", "--network", blue, "base", "bash", "-c",
                       f"ip -br addr show eth0; nc -z -w1 {server} 7000; echo name=$?; "
                       f"nc -z -w1 {ip} 7000; echo addr=$?")  # fmt: skip
    assert "10.201.7." in out
    assert "name=1" in out and "addr=1" in out
    # And with loopback only.
    code, out, _ = run(cli, "run", "--rm", "base", "bash", "-c",
                       f"ls /sys/class/net; nc -z -w1 {ip} 7000; echo addr=$?")  # fmt: skip
    assert out.split() == ["lo", "addr=1"]


def test_published_port_reached_from_the_host_loopback(cli, names) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    server = names("web")
    page = "HTTP/1.0 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nhello\\n"
    code, _, err = run(cli, "run", "-d", "--name", server, "-p", f"127.0.0.1:{port}:8000",
                       "base", "bash", "-c",
                       f"while true; do printf '{page}' | nc -l -p 8000 -q1; done")  # fmt: skip
    assert code == 0, err
    assert inspect(cli, server)["NetworkSettings"]["Ports"] == {
        "8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    assert _http_get(port).endswith(b"hello\n")
    code, out, _ = run(cli, "ps")
    assert f"127.0.0.1:{port}->8000/tcp" in out
    # Taken: the second container does not start, and says which port and what to do.
    other = names("web2")
    code, _, err = run(cli, "run", "--rm", "--name", other, "-p", f"127.0.0.1:{port}:8000",
                       "base", "true")  # fmt: skip
    assert code != 0 and f"127.0.0.1:{port} is already in use" in err
    # Once it stops, nobody listens on the host any more.
    cli("rm", "-f", server)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize(
    ("publish", "message"),
    [
        ("0.0.0.0:8080:80", "loopback only"),
        ("127.0.0.1:8080:80/udp", "only TCP ports"),
        ("127.0.0.1:8080:99999", "invalid port"),
        ("127.0.0.1:8000-8010:80", "invalid port"),
        ("127.0.0.1:8080:80:80", "-p 127.0.0.1:8080:80:80: write -p [127.0.0.1:]HOSTPORT:PORT"),
        ("8080:", "-p 8080:: write -p [127.0.0.1:]HOSTPORT:PORT"),
    ],
)
def test_bad_publish_is_refused_before_anything_starts(cli, publish: str, message: str) -> None:  # type: ignore[no-untyped-def]
    before = run(cli, "ps", "-aq")[1]
    code, _, err = run(cli, "run", "--rm", "-p", publish, "base", "true")
    assert code != 0 and message in err
    assert len(err.strip().splitlines()) == 1
    assert run(cli, "ps", "-aq")[1] == before


def test_bad_network_choices_say_what_to_do(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(cli, "run", "--rm", "--network", "nosuch", "base", "true")
    assert code != 0 and "No such network: nosuch" in err
    code, _, err = run(cli, "run", "--rm", "--network", "host", "base", "true")
    assert code != 0 and "never shares the host's network" in err
    code, _, err = run(cli, "run", "--rm", "--network-alias", "x", "base", "true")
    assert code != 0
    assert err == "sandbox: --network-alias needs a network: add --network lab (or another)\n"
    code, _, err2 = run(cli, "run", "--rm", "--network", "none", "--network-alias", "x", "base",
                        "true")  # fmt: skip
    assert code != 0 and err2 == err


def test_addresses_are_released_when_containers_end(cli, names, network) -> None:  # type: ignore[no-untyped-def]
    net = network("--subnet", "10.201.9.0/29")  # 6 hosts: the gateway and 5 containers
    first = names("first")
    code, _, err = run(cli, "run", "-d", "--name", first, "--network", net, "base", "sleep", "300")
    assert code == 0, err
    taken = address(cli, first, net)
    assert taken == "10.201.9.2"
    cli("rm", "-f", first)
    # The same lowest address again, again and again: nothing stays allocated.
    for _ in range(8):
        code, out, err = run(cli, "run", "--rm", "--network", net, "base", "bash", "-c",
                             "ip -br -4 addr show eth0")  # fmt: skip
        assert code == 0, err
        assert "10.201.9.2/29" in out


def test_a_full_subnet_refuses_the_next_container_clearly(cli, names, network) -> None:  # type: ignore[no-untyped-def]
    net = network("--subnet", "10.201.11.0/29")
    for _ in range(5):
        code, _, err = run(cli, "run", "-d", "--name", names("fill"), "--network", net,
                           "base", "sleep", "300")  # fmt: skip
        assert code == 0, err
    code, _, err = run(cli, "run", "--rm", "--network", net, "base", "true")
    assert code != 0 and "has no free address left" in err


def test_twenty_containers_on_one_network_all_reach_each_other(cli, names, network,
                                                               background) -> None:  # type: ignore[no-untyped-def]
    net = network()
    members = [names(f"m{i}") for i in range(20)]
    # All started at once: no two may get the same address.
    started = [background.start("run", "-d", "--name", name, "--network", net, "base",
                                "sleep", "600") for name in members]  # fmt: skip
    for proc in started:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    addresses = {address(cli, name, net) for name in members}
    assert len(addresses) == 20
    # The last one reaches every other by name, and every name is in its hosts file.
    script = "; ".join(f"ping -c1 -W2 {n} >/dev/null && echo ok-{n}" for n in members[:-1])
    code, out, err = run(cli, "exec", members[-1], "bash", "-c", script)
    assert code == 0, err
    assert sorted(out.split()) == sorted(f"ok-{n}" for n in members[:-1])
    code, out, _ = run(cli, "exec", members[0], "cat", "/etc/hosts")
    assert all(n in out for n in members)


def test_a_killed_daemon_leaves_nothing_and_the_next_one_runs_networks_again(fresh_root) -> None:  # type: ignore[no-untyped-def]
    from conftest import daemon_pid, sandbox_cmd

    def sbx(*args: str) -> tuple[int, str, str]:
        r = sandbox_cmd(*args, root=fresh_root)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    code, _, err = sbx("run", "-d", "--name", "srv", "--network", "lab", "-p",
                       f"127.0.0.1:{_free_port()}:80", "base", "sleep", "600")  # fmt: skip
    assert code == 0, err
    pid = daemon_pid(fresh_root)
    assert pid is not None
    os.kill(pid, 9)
    _wait_gone(pid)
    # Nothing of it remains: the leak fixture checks the namespaces, links
    # and processes at the end; the next daemon finds the container stopped.
    code, out, err = sbx("inspect", "srv")
    assert code == 0, err
    state = json.loads(out)
    state = state[0] if isinstance(state, list) else state
    assert state["State"]["Status"] == "exited"
    assert state["NetworkSettings"]["Networks"]["lab"]["IPAddress"] == ""
    code, _, err = sbx("restart", "srv")
    assert code == 0, err
    code, out, err = sbx("exec", "srv", "ip", "-br", "-4", "addr", "show", "eth0")
    assert code == 0, err
    assert "10.200.0.2/24" in out
    sbx("rm", "-f", "srv")


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not end")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_get(port: int) -> bytes:
    """GET / on the host's loopback, retrying while the server comes up."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            if data:
                return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered on 127.0.0.1:{port}")
        time.sleep(0.05)


def test_stats_count_the_traffic_of_a_container_on_a_network(cli, names) -> None:  # type: ignore[no-untyped-def]
    name = names("talker")
    pings = "ping -c3 -i0.2 -s1000 10.200.0.1 >/dev/null; sleep 300"
    code, _, err = run(cli, "run", "-d", "--name", name, "--network", "lab", "base",
                       "bash", "-c", pings)  # fmt: skip
    assert code == 0, err
    deadline = time.monotonic() + 10
    while True:  # NET I/O: received / sent; three 1 kB echoes each way make both >= 3 kB
        code, out, err = run(cli, "stats", "--no-stream", name)
        assert code == 0, err
        header, row = out.splitlines()[0], out.splitlines()[-1]
        column = row[header.index("NET I/O") : header.index("BLOCK I/O")].split("/")
        if all(part.strip().endswith("kB") and float(part.strip()[:-2]) >= 3 for part in column):
            break
        assert time.monotonic() < deadline, f"the traffic was not counted: {out}"
        time.sleep(0.1)


def test_connect_and_disconnect_a_running_container(cli, names) -> None:  # type: ignore[no-untyped-def]
    name, peer = names("late"), names("peer")
    for who in (name, peer):
        code, _, err = run(cli, "run", "-d", "--name", who, "base", "sleep", "300")
        assert code == 0, err
    code, _, err = run(cli, "network", "connect", "--alias", "cache", "lab", name)
    assert code == 0, err
    code, _, err = run(cli, "network", "connect", "lab", peer)
    assert code == 0, err
    code, out, err = run(cli, "exec", name, "bash", "-c", "ip -br addr show eth0; cat /etc/hosts")
    assert code == 0, err
    mine = address(cli, name)
    assert "eth0" in out and f"{mine}/24" in out
    assert "fe80" not in out  # IPv4 only, as for a container started on a network
    assert f"{mine}\t" in out and "cache" in out.split(f"{mine}\t")[1].splitlines()[0]
    code, out, _ = run(cli, "exec", peer, "ping", "-c1", "-W2", "cache")
    assert code == 0 and mine in out
    code, _, err = run(cli, "network", "disconnect", "lab", name)
    assert code == 0, err
    code, out, _ = run(cli, "exec", name, "ls", "/sys/class/net")
    assert out.split() == ["lo"]
    code, out, _ = run(cli, "exec", peer, "cat", "/etc/hosts")
    assert name not in out


def _host_network() -> dict[str, str]:
    """The host namespace's links, addresses, routes, and the sysctls the engine sets.

    The engine writes those sysctls in the namespaces it makes (IPv6 off,
    ping for everyone); written through the wrong namespace, they would
    change the host's.
    """
    files = ("/proc/net/dev", "/proc/net/route", "/proc/net/fib_trie", "/proc/net/if_inet6",
             "/proc/net/ipv6_route", "/proc/sys/net/ipv6/conf/default/disable_ipv6",
             "/proc/sys/net/ipv6/conf/all/disable_ipv6",
             "/proc/sys/net/ipv4/ping_group_range")  # fmt: skip
    found = {}
    for path in files:
        with open(path) as f:  # dev: drop the counters, which change with any traffic
            text = f.read()
        if path.endswith("/dev"):
            text = "\n".join(line.partition(":")[0] for line in text.splitlines())
        found[path] = text
    return found


def test_nothing_is_added_to_the_host_network_namespace(cli, names, network) -> None:  # type: ignore[no-untyped-def]
    before = _host_network()
    net = network()
    server = names("hostcheck")
    code, _, err = run(cli, "run", "-d", "--name", server, "--network", net, "-p",
                       f"127.0.0.1:{_free_port()}:80", "base", "sleep", "300")  # fmt: skip
    assert code == 0, err
    code, _, err = run(cli, "network", "connect", "lab", server)
    assert code == 0, err
    # Started on no network: its namespace is the clone's, not one the engine made.
    loner = names("loner")
    code, _, err = run(cli, "run", "-d", "--name", loner, "base", "sleep", "300")
    assert code == 0, err
    code, _, err = run(cli, "network", "connect", "lab", loner)
    assert code == 0, err
    code, out, err = run(cli, "exec", loner, "ls", "/sys/class/net")
    assert code == 0 and out.split() == ["eth0", "lo"], (out, err)
    assert _host_network() == before
