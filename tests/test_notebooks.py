"""The example notebooks: stored clean, and each runs top to bottom under nbval.

CI runs them through this file (``python -m pytest`` collects ``tests/`` only), each as
``python -m pytest --nbval-lax notebooks/<name>.ipynb`` in a subprocess with a fresh
``WORKBENCH_HOME`` and ``WORKBENCH_OFFLINE=1`` (the bundled real-MNIST subset), exactly as a
person would run them: a real kernel per notebook, real servers started by the notebooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01-quickstart", "02-remote-kernel", "03-rest-automation", "04-sql-over-runs",
            "05-distributed"]
PRESENT = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def test_the_five_notebooks_exist() -> None:
    assert PRESENT == EXPECTED


@pytest.mark.parametrize("name", PRESENT)
def test_stored_clean(name: str) -> None:
    """No outputs or execution counts in the repository: diffs stay readable, runs reproducible."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", PRESENT)
def test_runs_under_nbval(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_OFFLINE": "1",
           "WORKBENCH_TOKEN": "", "WORKBENCH_SERVER_URL": ""}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-cell-timeout=600", str(NOTEBOOKS / f"{name}.ipynb")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=880,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
