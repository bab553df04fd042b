"""``notebooks/compare_bounds.ipynb``: stored without outputs, and it runs from top to bottom
(kernel ``python3``, offline, in a temporary directory, 2 epochs), drawing every figure and
the table of its three runs."""

import nbformat
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOK = REPO / "notebooks" / "compare_bounds.ipynb"


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells(nb))


def test_the_notebook_trains_and_reports_three_runs(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("INTVAE_NOTEBOOK_EPOCHS", "2")
    monkeypatch.delenv("INTVAE_REPORT_RUNS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on an error
    outputs = {cell.source.splitlines()[-1]: cell.outputs for cell in code_cells(nb)}
    for last_line in ("report.plot_curves(runs)", "report.plot_decoder_std(decoded)",
                      "report.plot_reconstructions(decoded)"):
        assert any("image/png" in o.get("data", {}) for o in outputs[last_line]), last_line
    table = next(o.data["text/markdown"] for o in
                 outputs["display(Markdown(report.markdown(report.table(runs))))"])
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["elbo", "elbo"], ["ielbo", "ielbo"], ["irelbo", "irelbo"]]
    assert table.count("| completed |") == 3
    sweeps = list((tmp_path / "compare_bounds").iterdir())
    assert len(sweeps) == 1 and sorted(p.name for p in sweeps[0].iterdir()
                                       if p.is_dir()) == ["0", "1", "2"]

