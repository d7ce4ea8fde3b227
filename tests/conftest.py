"""Session setup: protocol plugins this tree declares but the installed metadata lacks.

Entry points come from the installed distribution's metadata, written when
the project was last installed (``pip install -e .``).  A tree that declares
a new plugin in ``pyproject.toml`` before it is installed again (a branch, a
fresh worktree sharing one install) would run its tests without it.  So,
before collection, every ``consensus.protocols`` entry point of
``pyproject.toml`` that the installed metadata does not name is declared by
a throwaway distribution (a ``.dist-info`` folder with just its entry
points) in a temporary directory put on ``sys.path`` and on ``PYTHONPATH``:
this process, the worker processes of parallel runs and the notebook
kernels all see the same plugins.  Once the project is installed again there
is nothing missing and this does nothing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from consensus.registry import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parent.parent


def _declare_missing_plugins() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    wanted = declared.get(ENTRY_POINT_GROUP, {})
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    missing = {name: target for name, target in wanted.items() if name not in installed}
    if not missing:
        return
    site = Path(tempfile.mkdtemp(prefix="consensus-plugins-"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    dist = site / "consensus_compare_unreleased-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: consensus-compare-unreleased\nVersion: 0\n"
    )
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in sorted(missing.items()))]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    sys.path.append(str(site))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(site)])


_declare_missing_plugins()
