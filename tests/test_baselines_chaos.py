"""The unsafe baselines under the nemesis: every unsafe configuration is caught
at the seed the README documents, its replay command reproduces the
violation, and the safe configurations pass.

``CAUGHT`` is the README's table (section "What consensus buys"): each
unsafe configuration and the first seed (from 0, 200 operations, the
``python -m bench chaos`` defaults) whose run is not linearizable or loses an
acknowledged write.  A configuration caught within the first few dozen
seeds is checked seed by seed (the earlier ones pass); for the rare ones
only the documented seed runs.  The 1,000-run soaks behind the table are
``python -m bench chaos --runs 1000 -j 2``, not run here.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.chaos import chaos_run, chaos_runs
from bench.cli import main
from consensus.testing.chaos import describe_failure

#: (protocol, options, mix, first seed caught): keep in step with the README's table.
CAUGHT: list[tuple[str, dict[str, Any], str, int]] = [
    ("primary-backup", {}, "kv", 36),
    ("primary-backup", {"mode": "semi-sync"}, "kv", 0),
    ("primary-backup", {"mode": "async"}, "kv", 0),
    ("primary-backup", {"failover": "monitor"}, "kv", 21),
    ("primary-backup", {"failover": "monitor", "reads": "confirmed"}, "kv", 128),
    ("primary-backup", {"mode": "semi-sync", "failover": "monitor"}, "kv", 0),
    ("primary-backup", {"mode": "async", "failover": "monitor"}, "kv", 0),
    ("primary-backup", {"promotion": "any", "reads": "confirmed"}, "kv", 26),
    ("nwr", {}, "kv", 0),
    ("nwr", {"w": 1, "r": 1}, "kv", 0),
    ("nwr", {"read_repair": "async"}, "kv", 2),
    ("nwr", {"clock": "version", "read_repair": "blocking"}, "kv", 1),
    ("nwr", {"clock": "version", "read_repair": "blocking", "sloppy": True}, "kv", 0),
    ("nwr", {"w": 1, "r": 1}, "registers", 0),
    ("nwr", {}, "registers", 7),
    ("nwr", {"clock": "version", "read_repair": "blocking"}, "registers", 9),
    ("nwr", {"clock": "version", "read_repair": "blocking", "sloppy": True}, "registers", 0),
]
#: Checked seed by seed up to here; beyond, the documented seed alone.
WALK = 40

#: Safe configurations: CI's share of their 1,000-run soaks.
SAFE: list[dict[str, Any]] = [
    {"reads": "confirmed"},
    {"failover": "none"},
    {"failover": "none", "mode": "async"},
]


def label(protocol: str, options: dict[str, Any], mix: str) -> str:
    return "-".join([protocol, *(f"{k}={v}" for k, v in options.items()), mix])


@pytest.mark.parametrize(
    ("protocol", "options", "mix", "first"), CAUGHT, ids=[label(*c[:3]) for c in CAUGHT]
)
def test_an_unsafe_configuration_is_caught_at_its_documented_seed_and_replays(
    protocol: str, options: dict[str, Any], mix: str, first: int, capsys: Any
) -> None:
    if first <= WALK:
        passed = [r.passed for r in chaos_runs(protocol, first + 1, options=options, mix=mix)]
        assert passed == [True] * first + [False], f"caught at seeds {passed}"
    caught = chaos_run(protocol, first, options=options, mix=mix)
    assert not caught.passed
    text = describe_failure(caught, 200, options=options, mix=mix)
    replay = text.rsplit("replay: ", 1)[1].split()
    assert replay[:3] == ["python", "-m", "bench"]
    assert main(replay[3:]) == 1
    out = capsys.readouterr().out
    witness = caught.violations[0].describe() if caught.violations else "acknowledged writes lost"
    assert witness.splitlines()[0] in " ".join(out.split()) or witness in out
    assert out.strip().splitlines()[-1].startswith(f"{protocol}: 1 runs, 1 violations")


@pytest.mark.parametrize("options", SAFE, ids=[label("primary-backup", o, "kv") for o in SAFE])
def test_a_safe_primary_backup_configuration_passes_seeded_chaos_runs(
    options: dict[str, Any],
) -> None:
    for result in chaos_runs("primary-backup", 30, seed=1000, ops=150, options=options):
        assert result.passed, describe_failure(result, 150, options=options)
        assert result.operations > 100
