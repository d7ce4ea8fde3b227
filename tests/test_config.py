"""Config loading: TOML files into validated objects; every error names key, value, allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consensus.config import (
    ClientConfig,
    ClusterConfig,
    ConfigError,
    Delay,
    NetworkConfig,
    StorageConfig,
    load_cluster_config,
    load_toml,
)
from protocols.sequencer import SequencerOptions


def write(tmp_path: Path, text: str, name: str = "cluster.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, body: str) -> ClusterConfig:
    """Load a sequencer config (the always-installed plugin) with ``body`` appended."""
    return load_cluster_config(write(tmp_path, 'protocol = "sequencer"\n' + body))


def error_of(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    return str(info.value)


# -- valid configs -----------------------------------------------------------------


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config == ClusterConfig(protocol="sequencer")
    assert config.nodes == 3 and config.seed == 0 and config.wire == "objects"
    assert config.network == NetworkConfig() and config.storage == StorageConfig()
    assert config.protocol_options() == SequencerOptions()


def test_full_config_round_trips_into_objects(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
nodes = 5
seed = 42
wire = "bytes"
snapshot_every = 100

[options]
heartbeat = 0.1
max_batch = 8

[network]
delay = { kind = "uniform", low = 0.001, high = 0.003 }
loss = 0.01
duplicate = 0.5
reorder = 1
reorder_delay = 0.02
client_delay = 0

[storage]
kind = "wal"
directory = "/tmp/x"
fsync = "batch"

[client]
timeout = 2
backoff = 0.5
max_attempts = 3
""",
    )
    assert config == ClusterConfig(
        protocol="sequencer",
        nodes=5,
        seed=42,
        wire="bytes",
        snapshot_every=100,
        options={"heartbeat": 0.1, "max_batch": 8},
        network=NetworkConfig(
            delay=Delay.uniform(0.001, 0.003),
            loss=0.01,
            duplicate=0.5,
            reorder=1.0,
            reorder_delay=0.02,
            client_delay=0.0,
        ),
        storage=StorageConfig(kind="wal", directory="/tmp/x", fsync="batch"),
        client=ClientConfig(timeout=2.0, backoff=0.5, max_attempts=3),
    )
    assert config.protocol_options() == SequencerOptions(heartbeat=0.1, max_batch=8)
    # Integers in float fields become floats.
    assert type(config.network.reorder) is float and type(config.client.timeout) is float


def test_constant_delay_table(tmp_path: Path) -> None:
    config = load(tmp_path, '[network.delay]\nkind = "constant"\nvalue = 0.25\n')
    assert config.network.delay == Delay.constant(0.25)
    assert config.network.delay.mean_delay(3) == 0.25


def test_normal_delay_table(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[network]\ndelay = { kind = "normal", mean = 0.01, stddev = 0.002, low = 0.005 }\n',
    )
    assert config.network.delay == Delay.normal(0.01, 0.002, low=0.005)
    assert config.network.delay.mean_delay(3) == 0.01


def test_latency_matrix_delay_table(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[network.delay]
kind = "matrix"
matrix = [[0, 0.05, 0.1], [0.05, 0, 0.08], [0.1, 0.08, 0]]
jitter = 0.002
""",
    )
    expected = Delay.latency_matrix([[0, 0.05, 0.1], [0.05, 0, 0.08], [0.1, 0.08, 0]], jitter=0.002)
    assert config.network.delay == expected
    assert config.network.delay.matrix[0] == (0.0, 0.05, 0.1)
    assert all(type(v) is float for row in expected.matrix for v in row)


def test_matrix_may_have_more_rows_than_nodes(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'nodes = 2\n[network.delay]\nkind = "matrix"\nmatrix = [[0,1,2],[1,0,3],[2,3,0]]\n',
    )
    assert len(config.network.delay.matrix) == 3
    assert config.network.delay.mean_delay(2) == pytest.approx(0.5)


def test_load_cluster_config_accepts_mapping_and_object() -> None:
    from_dict = load_cluster_config({"protocol": "sequencer", "nodes": 4})
    assert from_dict == ClusterConfig(protocol="sequencer", nodes=4)
    obj = ClusterConfig(protocol="sequencer", options=SequencerOptions(max_batch=2))
    assert load_cluster_config(obj) is obj
    assert obj.protocol_options() == SequencerOptions(max_batch=2)


def test_load_toml_returns_plain_data(tmp_path: Path) -> None:
    assert load_toml(write(tmp_path, "a = 1\n[b]\nc = 'x'\n")) == {"a": 1, "b": {"c": "x"}}


# -- errors name the dotted key, the bad value and what is allowed ----------------------


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_unknown_top_level_key_names_key_and_allowed_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "nodez = 3\n")
    assert message.startswith("nodez:")
    assert_names(message, "unknown key", "nodes", "network", "protocol", "wire")


def test_unknown_nested_key_is_dotted(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[network]\ndealy = 0.1\n")
    assert message.startswith("network.dealy:")
    assert_names(message, "unknown key", "delay", "loss", "reorder_delay")


def test_unknown_key_two_levels_deep(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[network.delay]\nkind = "uniform"\nhihg = 1\n')
    assert message.startswith("network.delay.hihg:")
    assert_names(message, "high", "low", "jitter")


@pytest.mark.parametrize(
    ("body", "key", "value", "allowed"),
    [
        ('nodes = "three"\n', "nodes", "'three'", "integer"),
        ("nodes = 2.5\n", "nodes", "2.5", "integer"),
        ("seed = true\n", "seed", "True", "integer"),
        ('[network]\nloss = "low"\n', "network.loss", "'low'", "number"),
        ("[network]\nloss = true\n", "network.loss", "True", "number"),
        ("network = 5\n", "network", "5", "table"),
        ("[storage]\ndirectory = 3\n", "storage.directory", "3", "string"),
        ('[network.delay]\nkind = "matrix"\nmatrix = "x"\n', "network.delay.matrix", "'x'", "list"),
        (
            '[network.delay]\nkind = "matrix"\nmatrix = [[0, "a"], [1, 0]]\n',
            "network.delay.matrix[0][1]",
            "'a'",
            "number",
        ),
    ],
)
def test_bad_type_names_key_value_and_expected_type(
    tmp_path: Path, body: str, key: str, value: str, allowed: str
) -> None:
    message = error_of(tmp_path, body)
    assert message.startswith(f"{key}:"), message
    assert_names(message, value, allowed)


@pytest.mark.parametrize(
    ("body", "key", "value", "allowed"),
    [
        ("[network]\nloss = 1.5\n", "network.loss", "1.5", ">= 0 and <= 1"),
        ("[network]\nduplicate = -0.1\n", "network.duplicate", "-0.1", ">= 0 and <= 1"),
        ("[network]\nreorder = nan\n", "network.reorder", "nan", ">= 0 and <= 1"),
        ("[network]\nreorder_delay = -1\n", "network.reorder_delay", "-1", ">= 0"),
        ("[network]\nclient_delay = -0.5\n", "network.client_delay", "-0.5", ">= 0"),
        ("[network.delay]\nvalue = -1\n", "network.delay.value", "-1", ">= 0"),
        ('[network.delay]\nkind = "uniform"\nlow = -2\n', "network.delay.low", "-2", ">= 0"),
        ('[network.delay]\nkind = "normal"\nstddev = -1\n', "network.delay.stddev", "-1", ">= 0"),
        ("[network.delay]\njitter = -1\n", "network.delay.jitter", "-1", ">= 0"),
        ("nodes = 0\n", "nodes", "0", ">= 1 and <= 99"),
        ("nodes = 100\n", "nodes", "100", ">= 1 and <= 99"),
        ("snapshot_every = -1\n", "snapshot_every", "-1", ">= 0"),
        ("[client]\ntimeout = 0\n", "client.timeout", "0", "> 0"),
        ("[client]\nmax_attempts = 0\n", "client.max_attempts", "0", ">= 1"),
    ],
)
def test_out_of_range_names_key_value_and_range(
    tmp_path: Path, body: str, key: str, value: str, allowed: str
) -> None:
    message = error_of(tmp_path, body)
    assert message.startswith(f"{key}:"), message
    assert_names(message, f"got {value}", allowed)


@pytest.mark.parametrize(
    ("body", "key", "value", "choices"),
    [
        (
            '[storage]\nfsync = "sometimes"\n',
            "storage.fsync",
            "'sometimes'",
            ("always", "batch", "never"),
        ),
        ('[storage]\nkind = "disk"\n', "storage.kind", "'disk'", ("memory", "wal")),
        ('wire = "json"\n', "wire", "'json'", ("objects", "bytes")),
        (
            '[network.delay]\nkind = "gauss"\n',
            "network.delay.kind",
            "'gauss'",
            ("constant", "uniform", "normal", "matrix"),
        ),
    ],
)
def test_bad_enum_names_key_value_and_choices(
    tmp_path: Path, body: str, key: str, value: str, choices: tuple[str, ...]
) -> None:
    message = error_of(tmp_path, body)
    assert message.startswith(f"{key}:"), message
    assert_names(message, f"got {value}", *(repr(c) for c in choices))


def test_uniform_high_below_low(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[network]\ndelay = { kind = "uniform", low = 0.5, high = 0.1 }\n')
    assert message.startswith("network.delay.high:")
    assert_names(message, ">= low (0.5)", "got 0.1")


def test_latency_matrix_must_be_square(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[network.delay]\nkind = "matrix"\nmatrix = [[0, 1], [1, 0, 2]]\n')
    assert message.startswith("network.delay.matrix:")
    assert_names(message, "row 1 has 3 entries, expected 2")


def test_latency_matrix_must_not_be_empty(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[network.delay]\nkind = "matrix"\n')
    assert message.startswith("network.delay.matrix:")


@pytest.mark.parametrize("cell", ["-0.5", "nan"])
def test_latency_matrix_cells_must_be_non_negative(tmp_path: Path, cell: str) -> None:
    message = error_of(
        tmp_path, f'[network.delay]\nkind = "matrix"\nmatrix = [[0, {cell}], [1, 0]]\n'
    )
    assert message.startswith("network.delay.matrix:")
    assert_names(message, "row 0", ">= 0", f"got {cell}")


def test_latency_matrix_needs_a_row_per_node(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, 'nodes = 3\n[network.delay]\nkind = "matrix"\nmatrix = [[0, 1], [1, 0]]\n'
    )
    assert message.startswith("network.delay.matrix:")
    assert_names(message, "2 rows", "(3)")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes = = 3\n", name="broken.toml")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": invalid TOML"):
        load_cluster_config(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": no such config file"):
        load_cluster_config(str(path))


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- protocol and protocol options ------------------------------------------------------


def test_unknown_protocol_lists_available_protocols(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster_config(write(tmp_path, 'protocol = "nope"\n'))
    message = str(info.value)
    assert message.startswith("protocol:")
    assert_names(message, "'nope'", "available", "sequencer")


def test_unknown_option_for_sequencer_names_key_and_allowed_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[options]\nhartbeat = 0.1\n")
    assert message.startswith("options.hartbeat:")
    assert_names(message, "unknown key", "heartbeat", "max_batch")


def test_option_of_wrong_type_names_dotted_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[options]\nmax_batch = "many"\n')
    assert message.startswith("options.max_batch:")
    assert_names(message, "'many'", "integer")


def test_options_must_be_a_table(tmp_path: Path) -> None:
    message = error_of(tmp_path, "options = 3\n")
    assert message.startswith("options:")
    assert_names(message, "SequencerOptions", "int")


def test_plugin_validator_failure_is_a_config_error(tmp_path: Path) -> None:
    # SequencerOptions uses attrs' own validators (ValueError); they still surface as
    # ConfigError under "options" mentioning the field.
    message = error_of(tmp_path, "[options]\nheartbeat = -1\n")
    assert message.startswith("options")
    assert_names(message, "heartbeat", "-1")
