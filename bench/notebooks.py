"""Re-executing the notebooks in place, so they are committed with their outputs.

Theory of operation
-------------------
``python -m bench notebooks`` runs every notebook under ``notebooks/`` top
to bottom with the parameters it is committed with (its cell tagged
``parameters`` holds the full values; ``tests/test_notebooks.py`` runs
the same notebooks with smaller ones), and writes each back with its new
outputs, so a code host shows the plots without anyone running them.
A notebook that raises is not written: the committed one keeps its last
good outputs, and the command exits non-zero naming the cell.

The kernel imports the packages of the checkout the notebooks live in
(``PYTHONPATH`` is set to it), whatever is installed, and runs in the
notebooks' directory, so their relative paths (``data/...``) work.
``-j N`` runs N notebooks at once (each in its own kernel; the notebooks'
own ``JOBS`` parameters add their worker processes on top).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["NOTEBOOK_DIR", "execute_notebook", "execute_notebooks", "notebook_paths"]

#: The notebooks of this checkout.
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_paths(only: Sequence[str] = (), directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks to run: all of them, or those named in ``only`` (with or
    without ``.ipynb``); an unknown name raises ``ValueError``."""
    paths = sorted(directory.glob("*.ipynb"))
    if not only:
        return paths
    by_name = {p.stem: p for p in paths}
    chosen = []
    for name in only:
        stem = Path(name).stem
        if stem not in by_name:
            raise ValueError(f"no notebook {name!r}; there are: {', '.join(sorted(by_name))}")
        chosen.append(by_name[stem])
    return chosen


def execute_notebook(path: Path, *, timeout: int = 7200, write: bool = True) -> float:
    """Run one notebook in place with its committed parameters; returns the
    wall-clock seconds it took.  Raises ``nbclient``'s ``CellExecutionError``
    (and writes nothing) if a cell fails."""
    import nbformat
    from nbclient import NotebookClient

    root = str(path.resolve().parent.parent)
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env={**os.environ, "PYTHONPATH": pythonpath})  # the kernel's environment
    if write:
        nbformat.write(notebook, path)
    return time.perf_counter() - started


def execute_notebooks(
    paths: Sequence[Path],
    *,
    jobs: int = 1,
    timeout: int = 7200,
    report: Callable[[Path, float | None, BaseException | None], None] | None = None,
) -> dict[Path, float | BaseException]:
    """Run ``paths`` (``jobs`` at a time); each path maps to its seconds or
    to the exception that stopped it.  ``report`` hears of each as it ends."""

    def one(path: Path) -> tuple[Path, float | BaseException]:
        try:
            seconds = execute_notebook(path, timeout=timeout)
        except Exception as exc:  # reported per notebook; the others still run
            if report is not None:
                report(path, None, exc)
            return path, exc
        if report is not None:
            report(path, seconds, None)
        return path, seconds

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return dict(pool.map(one, paths))
