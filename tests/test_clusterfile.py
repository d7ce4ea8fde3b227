"""The cluster file: every mistake names its key; paths resolve against the file."""

from __future__ import annotations

import pytest

from consensus.runtime.clusterfile import load_cluster_file, parse_address
from consensus.runtime.wire import login_proof, welcome_proof
from consensus.schema import ConfigError

NODES = [{"id": 0, "address": "127.0.0.1:7000"}, {"id": 1, "address": "127.0.0.1:7001"}]


def cluster(**kw):
    data = {"protocol": "raft", "secret": "s", "nodes": NODES}
    data.update(kw)
    return load_cluster_file(data)


def test_a_minimal_cluster_file_loads_with_defaults():
    c = cluster()
    assert c.node_ids == (0, 1) and c.fsync == "batch" and c.limits.max_pending > 0
    assert c.node(1).host == "127.0.0.1" and c.node(1).port == 7001
    assert c.spec().name == "raft"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nodes": []}, "nodes: list at least one node"),
        ({"nodes": NODES + [{"id": 1, "address": "127.0.0.1:7002"}]}, "duplicate node ids"),
        ({"nodes": [{"id": 0, "address": "a:1"}, {"id": 2, "address": "a:2"}]}, "ids must be 0..1"),
        ({"nodes": [{"id": 0, "address": "a:1"}, {"id": 1, "address": "a:1"}]}, "share an address"),
        ({"nodes": [{"id": 0, "address": "nohost"}]}, "expected 'host:port'"),
        ({"nodes": [{"id": 0, "address": "h:99999"}]}, "port must be 0..65535"),
        ({"fsync": "sometimes"}, "fsync: must be one of"),
        ({"protocol": "nosuch"}, "unknown protocol 'nosuch'"),
        ({"options": {"heartbeat_intervall": 1}}, "heartbeat_intervall: unknown key"),
        ({"limits": {"max_pending": 0}}, "max_pending: must be >= 1"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"secret_file": "x"}, "either secret or secret_file"),
    ],
)
def test_every_mistake_names_its_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        cluster(**changes)


def test_the_secret_comes_from_the_file_the_secret_file_or_the_environment(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    path = tmp_path / "c.toml"
    path.write_text(
        'protocol = "raft"\nsecret_file = "secret.txt"\n'
        '[[nodes]]\nid = 0\naddress = "127.0.0.1:7000"\n'
    )
    assert load_cluster_file(path).secret_bytes() == b"from-a-file"
    monkeypatch.setenv("CONSENSUS_SECRET", "from-env")
    assert cluster(secret="").secret_bytes() == b"from-env"
    monkeypatch.delenv("CONSENSUS_SECRET")
    with pytest.raises(ConfigError, match="no cluster secret"):
        cluster(secret="").secret_bytes()


def test_relative_paths_resolve_against_the_cluster_files_folder(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    path = sub / "c.toml"
    path.write_text(
        'protocol = "raft"\nsecret = "s"\ndata_dir = "state"\n'
        '[[nodes]]\nid = 0\naddress = "127.0.0.1:7000"\n'
    )
    c = load_cluster_file(path)
    assert c.node_dir(0) == sub / "state" / "node-0"


def test_addresses_parse_with_ipv6_brackets():
    assert parse_address("[::1]:7000") == ("::1", 7000)
    assert parse_address("example.org:1") == ("example.org", 1)


def test_proofs_depend_on_the_secret_both_nonces_the_role_and_both_nodes():
    base = login_proof(b"secret", b"n1", b"n2", "peer", 1, 2)
    assert base == login_proof(b"secret", b"n1", b"n2", "peer", 1, 2)
    for other in (
        login_proof(b"other", b"n1", b"n2", "peer", 1, 2),
        login_proof(b"secret", b"nX", b"n2", "peer", 1, 2),
        login_proof(b"secret", b"n1", b"nX", "peer", 1, 2),
        login_proof(b"secret", b"n1", b"n2", "client", 1, 2),
        login_proof(b"secret", b"n1", b"n2", "peer", 0, 2),
        login_proof(b"secret", b"n1", b"n2", "peer", 1, 0),
    ):
        assert other != base
    # The listener's proof is a different message: a login proof never passes for it.
    assert welcome_proof(b"secret", b"n1", b"n2", 2) != base


def test_a_bad_table_where_a_table_or_nothing_belongs_names_its_key():
    # tls is "TlsConfig | None": the one member's error is reported, not a TypeError.
    with pytest.raises(ConfigError, match="tls.*cert"):
        cluster(tls={"key": "k", "ca": "c"})
