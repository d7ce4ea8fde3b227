"""``python -m bench notebooks``: re-executes notebooks in place and saves outputs."""

from __future__ import annotations

import nbformat
import pytest

from bench.cli import main
from bench.notebooks import NOTEBOOK_DIR, execute_notebook, notebook_paths


def test_every_notebook_is_found_and_unknown_names_are_refused():
    names = {p.name for p in notebook_paths()}
    assert {"election_timeouts.ipynb", "compare_protocols.ipynb", "saturation.ipynb"} <= names
    assert notebook_paths(["saturation"]) == [NOTEBOOK_DIR / "saturation.ipynb"]
    with pytest.raises(ValueError, match="no notebook"):
        notebook_paths(["nope"])
    assert main(["notebooks", "--only", "nope"]) == 2


def _notebook(tmp_path, source):
    directory = tmp_path / "notebooks"
    directory.mkdir()
    path = directory / "tiny.ipynb"
    cells = [
        nbformat.v4.new_code_cell("N = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(source),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_a_notebook_is_executed_in_place_with_its_outputs(tmp_path):
    # The kernel imports this checkout's packages (PYTHONPATH), wherever it runs.
    path = _notebook(tmp_path, "import checkout_probe\nprint(N * checkout_probe.FACTOR)")
    (tmp_path / "checkout_probe.py").write_text("FACTOR = 14\n")
    assert execute_notebook(path) > 0
    cell = nbformat.read(path, as_version=4).cells[1]
    assert cell.outputs[0]["text"] == "42\n"


def test_a_failing_notebook_is_not_written(tmp_path):
    path = _notebook(tmp_path, "raise RuntimeError('boom')")
    before = path.read_text()
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError):
        execute_notebook(path)
    assert path.read_text() == before
