"""Real TCP, in one process: three NodeServers on loopback, clients, bad connections.

Real sockets need Trio's real clock, so every wait here is bounded with
``trio.fail_after`` (generously: this machine is shared) and nothing asserts
on how long anything took.  Every server runs inside the test's nursery and
is cancelled when the test ends, pass or fail.
"""

from __future__ import annotations

import logging
import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import cbor2
import pytest
import trio

from consensus.codec import VERSION, Codec
from consensus.commands import Get, Put, Request
from consensus.registry import get_protocol
from consensus.runtime.client import _TIMED_OUT, Client, _Conn, connect
from consensus.runtime.cluster import OperationFailed
from consensus.runtime.clusterfile import ClusterFile, load_cluster_file
from consensus.runtime.launcher import write_local_cluster_file
from consensus.runtime.server import NodeServer
from consensus.runtime.tcp import FramedStream, HandshakeError, dial_handshake, open_stream
from consensus.runtime.wire import (
    WIRE_VERSION,
    Hello,
    Login,
    Refused,
    Reply,
    Submit,
    login_proof,
    runtime_codec,
)

BOUND = 20.0  # seconds any one step may take on a loaded machine


def cluster_file(tmp_path: Path, protocol: str = "raft", extra: str = "", **kw: Any) -> ClusterFile:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = write_local_cluster_file(tmp_path / "cluster.toml", protocol, extra=extra, **kw)
    return load_cluster_file(path)


@asynccontextmanager
async def running(cluster: ClusterFile) -> AsyncIterator[list[NodeServer]]:
    servers = [NodeServer(cluster, n) for n in cluster.node_ids]
    async with trio.open_nursery() as nursery:
        for server in servers:
            await nursery.start(server.run)
        try:
            yield servers
        finally:
            nursery.cancel_scope.cancel()


async def wait_for_leader(servers: list[NodeServer]) -> int:
    with trio.fail_after(BOUND):
        while True:
            leaders = {s.runner.host.replica.leader() for s in servers if s.runner}
            if len(leaders) == 1 and None not in leaders:
                return leaders.pop()
            await trio.sleep(0.02)


async def raw_connection(server: NodeServer) -> FramedStream:
    host, port = server.listening
    stream = await trio.open_tcp_stream(host, port)
    return FramedStream(stream, 1 << 20, "test")


async def closed_by_peer(framed: FramedStream) -> bool:
    """Read until the node closes the connection (True) or BOUND passes."""
    with trio.move_on_after(BOUND):
        while True:
            try:
                data = await framed.stream.receive_some(65536)
            except (trio.BrokenResourceError, OSError):
                return True
            if not data:
                return True
    return False


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "paxos"])
async def test_three_node_processes_commit_over_tcp_and_every_node_applies(tmp_path, protocol):
    cluster = cluster_file(tmp_path, protocol)
    async with running(cluster) as servers:
        async with connect(cluster) as client:
            with trio.fail_after(BOUND):
                await client.put("a", "1")
                await client.append("a", "2")
                assert await client.cas("a", "12", "3") is True
                assert await client.get("a") == "3"
                assert await client.delete("a") is True
                assert await client.get("a") is None
            with trio.fail_after(BOUND):
                while True:
                    applied = [s.runner.host.sm.applied_index for s in servers]
                    if len(set(applied)) == 1 and applied[0] >= 4:
                        break
                    await trio.sleep(0.02)
            for node in cluster.node_ids:
                status = await client.status(node)
                assert status["node"] == node and status["protocol"] == protocol
                index, values = await client.local_values(node, ["a"])
                assert index >= 4 and values == {"a": None}


async def test_many_concurrent_operations_share_one_connection(tmp_path):
    cluster = cluster_file(tmp_path)
    async with running(cluster), connect(cluster) as client:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(client.append, f"k{i % 7}", f"{i},")
            values = {k: await client.get(f"k{k}") for k in range(7)}
        tokens = sorted(int(t) for v in values.values() for t in v.split(",") if t)
        assert tokens == list(range(200))  # each append applied exactly once
        assert len(client._conns) <= 3


async def test_a_node_restarts_from_its_write_ahead_log(tmp_path):
    cluster = cluster_file(tmp_path)
    async with running(cluster), connect(cluster) as client:
        with trio.fail_after(BOUND):
            for i in range(20):
                await client.put(f"k{i}", str(i))
    # Every node stopped; a new set of servers recovers the data from disk.
    async with running(cluster), connect(cluster) as client:
        with trio.fail_after(BOUND):
            assert [await client.get(f"k{i}") for i in range(20)] == [str(i) for i in range(20)]


async def test_a_leader_under_overload_answers_busy_and_clients_retry_until_done(tmp_path):
    cluster = cluster_file(tmp_path, extra="[limits]\nmax_pending = 4\n")
    async with running(cluster), connect(cluster) as client:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                for i in range(300):
                    nursery.start_soon(client.put, f"k{i}", "v")
        assert client.stats["busy"] > 0
        with trio.fail_after(BOUND):
            assert await client.get("k299") == "v"


# -- bad connections are closed with one reason; the node keeps serving -------------------


async def assert_still_commits(cluster: ClusterFile) -> None:
    async with connect(cluster) as client:
        with trio.fail_after(BOUND):
            await client.put("after", "ok")
            assert await client.get("after") == "ok"


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]


async def test_garbage_bytes_close_the_connection_with_a_logged_reason(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path)
    async with running(cluster) as servers:
        framed = await raw_connection(servers[0])
        await framed.receive_frame()  # Hello
        await framed.send(b"\x00\x00\x00\x05hello, this is not cbor")
        assert await closed_by_peer(framed)
        await assert_still_commits(cluster)
    assert any("bad handshake frame" in m for m in refusals(caplog)), caplog.text


async def test_an_oversize_length_prefix_is_refused_before_the_body(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path)
    async with running(cluster) as servers:
        framed = await raw_connection(servers[1])
        await framed.receive_frame()
        await framed.send((2**31).to_bytes(4, "big"))  # 2 GiB: the node must not wait for it
        assert await closed_by_peer(framed)
        await assert_still_commits(cluster)
    assert any("over max_frame" in m for m in refusals(caplog)), caplog.text


async def test_a_wrong_secret_is_refused_and_told_why(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path)
    async with running(cluster) as servers:
        host, port = servers[0].listening
        framed = FramedStream(await open_stream(host, port), 1 << 20, "test")
        with pytest.raises(HandshakeError, match="wrong cluster secret"):
            await dial_handshake(
                framed, secret=b"not the secret", role="client", me=-1, listener=0, timeout=BOUND
            )
        await framed.aclose()
        # The client library reports the same as a failed operation, never a hang.
        async with connect(cluster, secret=b"nope", max_attempts=3, timeout=2.0) as bad:
            with pytest.raises(OperationFailed, match="wrong cluster secret"):
                await bad.put("x", "y")
        await assert_still_commits(cluster)
    assert any("authentication failed" in m for m in refusals(caplog)), caplog.text


async def test_another_wire_version_is_refused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path)
    secret = cluster.secret_bytes()
    codec = runtime_codec()
    async with running(cluster) as servers:
        # A Login of the next handshake version, properly signed.
        framed = await raw_connection(servers[2])
        hello = codec.decode(await framed.receive_frame())
        assert isinstance(hello, Hello) and hello.version == WIRE_VERSION
        nonce = b"n" * 16
        proof = login_proof(secret, hello.nonce, nonce, "client", -1, 2)
        login = Login(version=WIRE_VERSION + 1, role="client", node=-1, nonce=nonce, proof=proof)
        await framed.send(codec.encode_frame(login))
        refused = codec.decode(await framed.receive_frame())
        assert isinstance(refused, Refused) and "wire version" in refused.reason
        assert await closed_by_peer(framed)
        # A frame whose codec version is not ours.
        framed = await raw_connection(servers[2])
        await framed.receive_frame()
        body = cbor2.dumps([VERSION_FROM_THE_FUTURE, 1, "x"])
        await framed.send(len(body).to_bytes(4, "big") + body)
        assert await closed_by_peer(framed)
        await assert_still_commits(cluster)
    messages = refusals(caplog)
    ours, theirs = WIRE_VERSION, WIRE_VERSION + 1
    assert any(f"wire version {theirs}, this node speaks {ours}" in m for m in messages), (
        caplog.text
    )
    assert any(f"this codec reads {VERSION}" in m for m in messages), caplog.text


VERSION_FROM_THE_FUTURE = 99


async def test_a_bad_frame_after_login_closes_only_that_client(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path)
    async with running(cluster) as servers:
        host, port = servers[0].listening
        framed = FramedStream(await open_stream(host, port), 1 << 20, "test")
        await dial_handshake(
            framed,
            secret=cluster.secret_bytes(),
            role="client",
            me=-1,
            listener=0,
            timeout=BOUND,
        )
        await framed.send(b"\x00\x00\x00\x03\xff\xff\xff")
        assert await closed_by_peer(framed)
        await assert_still_commits(cluster)
    assert "closing client connection" in caplog.text and "bad frame" in caplog.text


async def test_a_peer_sending_an_unknown_message_type_is_disconnected(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path)
    async with running(cluster) as servers:
        await wait_for_leader(servers)
        host, port = servers[2].listening
        framed = FramedStream(await open_stream(host, port), 1 << 20, "test")
        # Authenticated as node 0 (it holds the secret), then speaks nonsense.
        await dial_handshake(
            framed,
            secret=cluster.secret_bytes(),
            role="peer",
            me=0,
            listener=2,
            timeout=BOUND,
        )
        body = cbor2.dumps([VERSION, 200, "no message has tag 200"])
        await framed.send(len(body).to_bytes(4, "big") + body)
        assert await closed_by_peer(framed)
        await assert_still_commits(cluster)
    assert "closing connection to node 0: bad frame: unknown message tag 200" in caplog.text


async def test_a_client_submit_to_a_follower_is_redirected(tmp_path):
    cluster = cluster_file(tmp_path)
    async with running(cluster) as servers:
        leader = await wait_for_leader(servers)
        follower = next(n for n in cluster.node_ids if n != leader)
        async with connect(cluster) as client:
            with trio.fail_after(BOUND):
                await client.submit(Put(key="x", value="1"), node=follower)
            assert client.leader == leader
            assert client.stats["redirects"] >= 1


def test_submit_frames_round_trip_through_the_runtime_codec():
    codec = runtime_codec()
    spec = get_protocol("raft")
    assert Codec.for_protocol(spec).max_frame == codec.max_frame
    from consensus.commands import Request

    message = Submit(requests=(Request(client_id=1, seq=2, command=Put(key="k", value="v")),))
    assert codec.decode(codec.encode(message)) == message


def test_free_ports_are_distinct_and_bindable():
    from consensus.runtime.launcher import free_ports

    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


# -- TLS and the blocking client ------------------------------------------------------------


def tls_cluster(tmp_path: Path) -> ClusterFile:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf = ca.issue_cert("consensus")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "node.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "node.key"))
    extra = '[tls]\ncert = "node.pem"\nkey = "node.key"\nca = "ca.pem"\nserver_name = "consensus"\n'
    return cluster_file(tmp_path, extra=extra)


async def test_a_tls_cluster_commits_and_refuses_plain_connections(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = tls_cluster(tmp_path)
    async with running(cluster) as servers:
        async with connect(cluster) as client:
            with trio.fail_after(BOUND):
                await client.put("secret", "kept")
                assert await client.get("secret") == "kept"
        # A client that does not speak TLS gets nowhere, and the node carries on.
        host, port = servers[0].listening
        framed = FramedStream(await open_stream(host, port), 1 << 20, "plain")
        with pytest.raises((HandshakeError, trio.BrokenResourceError)):
            await dial_handshake(
                framed,
                secret=cluster.secret_bytes(),
                role="client",
                me=-1,
                listener=0,
                timeout=5.0,
            )
        await framed.aclose()
        async with connect(cluster) as client:
            with trio.fail_after(BOUND):
                assert await client.get("secret") == "kept"
    assert any("refused connection" in m for m in refusals(caplog)), caplog.text


async def test_the_blocking_client_works_from_a_thread_without_an_event_loop(tmp_path):
    from consensus.runtime.client import connect_sync

    cluster = cluster_file(tmp_path)
    async with running(cluster):

        def use_it() -> tuple[Any, Any, Any]:
            with connect_sync(cluster) as client:
                client.put("k", "v")
                return client.get("k"), client.cas("k", "v", "w"), client.status(0)["node"]

        got, swapped, node = await trio.to_thread.run_sync(use_it)
    assert (got, swapped, node) == ("v", True, 0)


async def test_a_silent_connection_is_closed_after_the_handshake_timeout(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="consensus")
    cluster = cluster_file(tmp_path, extra="[limits]\nhandshake_timeout = 0.3\n")
    async with running(cluster) as servers:
        framed = await raw_connection(servers[0])
        await framed.receive_frame()  # Hello, then say nothing
        assert await closed_by_peer(framed)
        await assert_still_commits(cluster)
    assert any("no complete handshake within 0.3 s" in m for m in refusals(caplog)), caplog.text


async def test_a_request_of_an_expired_session_fails_once_and_the_client_opens_a_new_one(tmp_path):
    # A cluster that keeps one session: any other client's request evicts it.
    cluster = cluster_file(tmp_path, settings={"max_sessions": 1})

    async def other(command: Any) -> Any:  # a request of a new session (seq 1)
        async with connect(cluster) as client:
            return await client.submit(command)

    async with running(cluster), connect(cluster) as first:
        with trio.fail_after(BOUND):
            await first.put("a", "1")  # opens the first client's session (seq 1)
            await other(Put(key="b", value="1"))  # evicts it
            with pytest.raises(OperationFailed, match="session_expired"):
                await first.put("a", "2")  # seq 2 of a session the cluster forgot
            assert first.stats["sessions_expired"] == 1
            # Not executed, never retried; the next command opens a new session.
            assert await other(Get(key="a")) == "1"
            await first.put("a", "3")
            assert await other(Get(key="a")) == "3"

            # The same through the callback path load generators use.
            await first.put("a", "4")
            await other(Put(key="b", value="2"))
            done = trio.Event()
            op = first.start(Put(key="a", value="5"), lambda op: done.set())
            await done.wait()
            assert op.status == "info" and first.stats["sessions_expired"] == 2
            assert await other(Get(key="a")) == "4"
            await first.put("a", "6")
            assert await other(Get(key="a")) == "6"


async def test_the_clients_watchdog_times_out_exactly_the_unanswered_attempts(autojump_clock):
    # No sockets: one connection's bookkeeping, as its reader and watchdog see it.
    def request(seq: int) -> Request:
        return Request(client_id=7, seq=seq, command=Put(key="k", value=str(seq)))

    async with trio.open_nursery() as nursery:
        client = Client(nursery, {0: ("127.0.0.1", 1)}, b"s" * 32, timeout=2.0)
        conn = _Conn(client, 0)
        nursery.start_soon(conn._watchdog)
        first = conn.send(request(1))
        await trio.sleep(0.5)
        answered, late = conn.send(request(2)), conn.send(request(3))
        conn.pending.pop((7, 2)).set(Reply(client_id=7, seq=2, ok=True))  # as the reader does
        await trio.sleep(1.6)  # 2.1 s: only the first attempt's deadline has passed
        assert first.reply is _TIMED_OUT and late.reply is None
        assert list(conn.pending) == [(7, 3)]
        await trio.sleep(0.5)
        assert late.reply is _TIMED_OUT and answered.reply.ok and not conn.pending
        again = conn.send(request(4))  # the watchdog, idle, wakes for a new attempt
        await trio.sleep(2.1)
        assert again.reply is _TIMED_OUT
        nursery.cancel_scope.cancel()
