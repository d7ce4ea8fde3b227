"""The conformance kit from a plugin author's side: the example chain plugin
(examples/chain) passes it, installed or registered, and broken plugins fail it.

Three ways in, as an author would use them:

* installed: a temporary virtualenv gets this repository and the example
  package registered as distributions (their metadata and entry points,
  written the way an editable install leaves them), then ``pytest
  --consensus-plugin=chain`` runs there in a subprocess, in an empty project
  with no conftest;
* registered: ``register()`` in this process, then the kit through pytest
  in-process (pytester) and as plain functions;
* broken on purpose: a chain that acknowledges at the head and the Raft that
  serves stale reads must make the kit fail, naming the seed.
"""

from __future__ import annotations

import os
import re
import site as site_module
import subprocess
import tomllib
import unittest
import venv
from pathlib import Path
from typing import Any

import pytest

from consensus import registry
from consensus.registry import register
from consensus.testing import RULES, check_chaos, rules

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ROOT / "examples" / "chain"
KIT = ["-p", "consensus.testing.plugin"]  # what the pytest11 entry point does when installed


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example package importable and its plugins registered, for this test only."""
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    monkeypatch.syspath_prepend(str(CHAIN))
    import chain
    import chain.broken

    register(chain.PROTOCOL)
    register(chain.broken.EARLY_ACK)
    return chain


def outcomes(output: str) -> dict[str, str]:
    """test id -> PASSED/SKIPPED/FAILED from ``pytest -v`` output lines."""
    found = re.findall(r"::(test_\w+\[[^\]]+\]) (PASSED|SKIPPED|FAILED)", output)
    return dict(found)


# -- installed through its entry point, run by pytest in another project -------------------


def _install_by_metadata(site: Path, project: Path) -> None:
    """Register ``project`` in ``site`` as an editable install does: a ``.pth`` line
    putting its source on the path, and a ``.dist-info`` with its entry points.

    Done by hand rather than by pip so the test stays offline and quick: this
    machine's Python has no ``wheel`` for a build without isolation, and an
    isolated build would download setuptools.
    """
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in points.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (site / f"{name.replace('-', '_')}.pth").write_text(f"{project}\n")


@pytest.fixture(scope="module")
def virtualenv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv over this Python's packages, with this repository and the chain example
    registered as distributions; returns its python."""
    env = tmp_path_factory.mktemp("venv")
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    except Exception as exc:  # no venv module, a read-only interpreter, ...
        pytest.skip(f"cannot create a virtualenv here: {exc}")
    python = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # This interpreter's packages (pytest, attrs, trio, ...) even when it runs in a
    # virtualenv of its own, which system_site_packages would not see.
    dirs = [*site_module.getsitepackages(), site_module.getusersitepackages()]
    lines = [f"import site; site.addsitedir({d!r})" for d in dirs if Path(d).is_dir()]
    (site / "outer-site-packages.pth").write_text("\n".join(lines) + "\n")
    _install_by_metadata(site, ROOT)
    _install_by_metadata(site, CHAIN)
    return python


def run_pytest(python: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    return subprocess.run(
        [python, "-m", "pytest", "-v", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_installed_plugin_passes_the_kit_in_a_project_of_its_own(
    virtualenv: Path, tmp_path: Path, chain: Any
) -> None:
    # (``chain`` registers it here too, only to read what it lacks.)
    (tmp_path / "test_mine.py").write_text("def test_my_own_test():\n    pass\n")
    run = run_pytest(virtualenv, tmp_path, "--consensus-plugin=chain")
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = outcomes(run.stdout)
    kit = {test: outcome for test, outcome in ran.items() if "[chain" in test}
    # Every rule ran (skipped only where the plugin declares it lacks a capability).
    assert {f"test_rule[chain-{rule.name}]" for rule in RULES} | {"test_chaos[chain]"} == set(kit)
    skipped = {test for test, outcome in kit.items() if outcome == "SKIPPED"}
    assert skipped == {f"test_rule[chain-{r.name}]" for r in RULES if r.missing("chain")}
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed == len(kit) - len(skipped) + 1 and "failed" not in summary  # + test_mine
    assert "test_my_own_test PASSED" in run.stdout


def test_a_broken_plugin_fails_the_kit_through_pytest_and_names_the_seed(
    virtualenv: Path, tmp_path: Path
) -> None:
    # Registered by an imported module, not installed: --consensus-import.  Only the
    # soak (-k): it catches this bug at once, where the linearizability checker needs
    # its whole 20 s time limit on the rules' longer histories of it.
    run = run_pytest(
        virtualenv,
        tmp_path,
        "--consensus-import=chain.broken",
        "--consensus-plugin=chain-early-ack",
        "--consensus-chaos-runs=3",
        "-k",
        "test_chaos",
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert outcomes(run.stdout)["test_chaos[chain-early-ack]"] == "FAILED"
    assert "3 of 3 chaos runs of 'chain-early-ack' failed" in run.stdout
    assert "python -m bench chaos --protocol chain-early-ack --runs 1 --seed 0" in run.stdout


# -- registered in this process ------------------------------------------------------------


def test_a_registered_plugin_passes_the_kit_in_process(chain: Any, pytester: Any) -> None:
    result = pytester.runpytest_inprocess(*KIT, "-v", "--consensus-plugin=chain")
    skipped = [rule for rule in RULES if rule.missing("chain")]
    result.assert_outcomes(passed=len(RULES) - len(skipped) + 1, skipped=len(skipped))
    assert set(rules.lacks("chain")) == {"failover", "quorum"}


def test_the_kit_is_inert_without_the_option_and_rejects_an_unknown_plugin(
    pytester: Any,
) -> None:
    pytester.makepyfile("def test_alone():\n    pass\n")
    pytester.runpytest_inprocess(*KIT).assert_outcomes(passed=1)
    wrong = pytester.runpytest_inprocess(*KIT, "--consensus-plugin=no-such-protocol")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown protocol 'no-such-protocol'; available: " in wrong.stderr.str()


def test_kit_items_carry_a_marker_and_the_soak_can_be_turned_off(chain: Any, pytester: Any) -> None:
    pytester.makepyfile("def test_alone():\n    pass\n")
    result = pytester.runpytest_inprocess(
        *KIT, "--consensus-plugin=chain", "--consensus-chaos-runs=0", "-m", "consensus_kit"
    )
    skipped = [rule for rule in RULES if rule.missing("chain")]
    result.assert_outcomes(passed=len(RULES) - len(skipped), skipped=len(skipped) + 1)


def test_rules_are_plain_functions_a_unittest_suite_can_call(chain: Any) -> None:
    rules.agreement("chain")
    with pytest.raises(unittest.SkipTest, match="chain lacks failover: a fixed chain"):
        rules.leader_failover("chain")
    assert check_chaos("chain", runs=2, ops=60) > 0


# -- broken plugins fail it --------------------------------------------------------------


def test_the_raft_that_serves_stale_reads_fails_the_linearizability_rule() -> None:
    with pytest.raises(AssertionError) as failed:
        rules.linearizable_under_faults("raft-stale-reads")
    message = str(failed.value)
    assert "rule 'linearizable_under_faults' failed for 'raft-stale-reads'" in message
    assert "is not linearizable" in message
    assert (
        "replay: consensus.testing.rules.linearizable_under_faults('raft-stale-reads', seed=52)"
        in message
    )


def test_the_chain_that_acknowledges_at_the_head_fails_the_chaos_soak(chain: Any) -> None:
    with pytest.raises(AssertionError, match=r"seed 0 \(chain-early-ack\)"):
        check_chaos("chain-early-ack", runs=2)


def test_the_example_plugin_is_pure_like_the_built_in_ones() -> None:
    from test_purity import FORBIDDEN_IN_PROTOCOLS, violations

    paths = sorted((CHAIN / "chain").glob("*.py"))
    assert len(paths) == 4
    for path in paths:
        assert violations(path.read_text(), path.name, FORBIDDEN_IN_PROTOCOLS, True) == []
