"""The example notebook runs end to end and shows the result, its plots and its trials."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_example_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    for name in ("stabilize_digits.ipynb", "models.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    notebook = nbformat.read(tmp_path / "stabilize_digits.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    data = [o.get("data", {}) for o in outputs if o.output_type == "execute_result"]
    html = [d["text/html"] for d in data if "text/html" in d]
    assert any("<b>StabilityResult</b>" in h for h in html)  # result's _repr_html_
    assert any(h.startswith("<div style='max-width:100%;overflow-x:auto'><table>")
               and h.count("<tr>") == 1 + 3 for h in html)  # result.trials
    assert any("image/png" in d for d in data)  # result.plot() shown inline
    assert any(h.startswith("<section class='diagnosis'>") for h in html)  # result.diagnosis
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "final training loss" in text
    # stabilize()'s cell: a progress bar on stderr, and nothing else on it (no framework
    # warnings, no Optuna INFO lines, no tqdm warning about ipywidgets)
    search_cell = next(c for c in notebook.cells
                       if c.cell_type == "code" and "= stabilize(" in c.source)
    err = "".join(o.get("text", "") for o in search_cell.outputs
                  if o.output_type == "stream" and o.name == "stderr")
    assert "3/3" in err and "trial" in err and "best " in err and "diverged " in err
    for noise in ("Warning", "WARNING", "[I ", "IProgress", "retracing", "I0000"):
        assert noise not in err, err
    # the package imported TensorFlow (the first cell's `from stabilizer import stabilize`):
    # no start-up lines in any cell, though TF_CPP_MIN_LOG_LEVEL is not set
    assert "I0000" not in "".join(o.get("text", "") for o in outputs)
    assert "['best.yaml', 'report.html', 'summary.json', 'trials.csv']" in \
        data[-1]["text/plain"]
