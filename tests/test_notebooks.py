"""Every notebook under notebooks/ runs top to bottom without an error.

A notebook whose full run is too long for CI has a cell tagged
``parameters`` (papermill's convention); CI runs it with the smaller values
of ``CI_PARAMETERS``, assigned in a cell inserted right after that one.  The
committed notebook keeps the outputs of its full run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

#: notebook -> the values CI runs it with.
CI_PARAMETERS: dict[str, dict[str, Any]] = {
    "compare_protocols.ipynb": {
        "CLIENTS": [1, 16],
        "LAN_DURATION": 0.6,
        "WAN_DURATION": 3.0,
        "JOBS": 1,
    },
    "election_timeouts.ipynb": {
        "TRIALS": 3,
        "TRIALS_FIXED": 1,
        "VARIANT_TRIALS": 2,
        "MP_TRIALS": 2,
        "JOBS": 1,
    },
    "why_consensus.ipynb": {"DURATION": 6.0},
    "saturation.ipynb": {
        "RATES": [5000, 40000],
        "NODES": [3],
        "PACKS": [0],
        "DURATION": 0.8,
        "JOBS": 1,
    },
}


def with_parameters(notebook: Any, values: dict[str, Any]) -> None:
    """Insert ``name = value`` assignments after the cell tagged ``parameters``."""
    cells = notebook.cells
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cells.insert(index + 1, nbformat.v4.new_code_cell(source))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    # The kernel imports this checkout's packages, whatever is installed.
    root = str(path.parent.parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(path, as_version=4)
    if path.name in CI_PARAMETERS:
        with_parameters(notebook, CI_PARAMETERS[path.name])
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
