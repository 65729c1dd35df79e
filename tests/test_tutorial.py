"""docs/tutorial.ipynb runs as written: every cell is executed by a Jupyter kernel, as a reader would."""

from __future__ import annotations

import nbformat
from conftest import REPO
from nbclient import NotebookClient


def test_tutorial_notebook_runs(tmp_path):
    notebook = nbformat.read(REPO / "docs" / "tutorial.ipynb", as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}  # the kernel's working directory
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "largest difference from autograd" in text and "after 150 steps" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the loss curve
    assert any("text/latex" in o.get("data", {}) or "text/markdown" in o.get("data", {}) for o in outputs)
