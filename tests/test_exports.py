"""The curated public API: everything in ``__all__`` exists, nothing is missing."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["consensus", "consensus.testing", "bench"])
def test_every_exported_name_exists(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    assert len(module.__all__) == len(set(module.__all__))


def test_plugins_export_their_spec():
    from consensus.registry import ProtocolSpec, get_protocol

    packages = {"primary-backup": "primarybackup"}
    for name in ("raft", "multipaxos", "paxos", "sequencer", "primary-backup", "nwr"):
        spec = get_protocol(name)
        assert isinstance(spec, ProtocolSpec) and spec.name == name
        module = importlib.import_module(f"protocols.{packages.get(name, name)}")
        assert "PROTOCOL" in module.__all__
