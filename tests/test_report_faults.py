"""The report (``intvae.report``) on damaged run directories, written here by hand next to a good
run (no training): a damaged ``metrics.csv`` cell or row, ``results.json`` or ``config.yaml``
costs that cell or that run, with one warning naming the file, and the rest is rendered; and
strings from a run directory cannot break the markdown table's rows or inject markup."""

import csv
import json
import logging
from dataclasses import dataclass

import pytest

from intvae.report import __main__ as cli
from intvae.report.results_table import COLUMNS

GOOD_RESULTS = {"bound": "ielbo", "delta": 0.01, "alpha": 2.0, "samples": 10, "epochs": 2,
                "train_bound": -1700.25, "val_bound": -1710.5, "test_bound": -1712.0,
                "non_finite_steps": 0, "wall_seconds": 12.5, "status": "completed"}
GOOD_METRICS = ("epoch,step,train/bound,val/bound\n"
                "0,1,,-1800.0\n0,1,-1900.0,\n1,3,,-1710.5\n1,3,-1700.25,\n")
GOOD_CONFIG = ("likelihood: {_target_: intvae.likelihoods.GaussianHead, sigma_min: 0.001}\n"
               "interval: {_target_: intvae.intervals.Fixed, delta: 0.01}\n"
               "noise: {}\n")
BAD_METRICS_START = "epoch,step,train/bound,val/bound\n0,1,,-880.5\n"
"""The damaged run's metrics.csv up to its third line, the one damaged below."""
DEEP = "[" * 100_000 + "]" * 100_000
"""Nested too deeply for a recursive parser (``json.loads`` raises RecursionError)."""


@dataclass
class Report:
    status: int
    rows: dict[str, dict]
    """``table.csv``: run -> its row."""
    markdown: str
    warnings: list[str]
    """The report's warnings (intvae's loggers)."""


def write_run(path, results=None, metrics=None, config=None):
    """A run directory holding the files given (a dict as JSON, bytes as they are)."""
    path.mkdir(parents=True)
    for name, content in (("results.json", results), ("metrics.csv", metrics),
                          ("config.yaml", config)):
        if content is None:
            continue
        if isinstance(content, dict):
            content = json.dumps(content)
        (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.fixture
def runs(tmp_path):
    """A sweep directory holding the good run ``good``."""
    write_run(tmp_path / "runs" / "good", GOOD_RESULTS, GOOD_METRICS, GOOD_CONFIG)
    return tmp_path / "runs"


def report(runs, caplog, *args) -> Report:
    out = runs.parent / "out"
    caplog.clear()
    status = cli.main([str(runs), *args, "--out", str(out)])
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("intvae")]
    if status != 0:
        return Report(status, {}, "", warnings)
    with open(out / "table.csv", newline="") as file:
        rows = {row["run"]: row for row in csv.DictReader(file)}
    return Report(status, rows, (out / "table.md").read_text(), warnings)


def md_cells(line: str) -> list[str]:
    """The cells of a markdown table row as GitHub splits it: at every pipe that no backslash
    escapes (a backslash escapes the character after it, a backslash too)."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells, cell, i = [], "", 1
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            cell += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += line[i]
        i += 1
    return cells


def md_rows(markdown: str) -> dict[str, dict[str, str]]:
    """``table.md``: run -> column -> cell, after checking that every line is a row of as many
    cells as there are columns."""
    lines = markdown.splitlines()
    assert md_cells(lines[0]) == list(COLUMNS)
    assert lines[1] == "|" + "---|" * len(COLUMNS)
    rows = {}
    for line in lines[2:]:
        cells = md_cells(line)
        assert len(cells) == len(COLUMNS), line
        rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def check_rendered(result: Report, damaged, *where: str) -> None:
    """Exit status 0, the good run in both tables, and one warning: it names ``damaged`` (a
    file) and ``where`` (its line and column, its field)."""
    assert result.status == 0, result.warnings
    assert result.rows["good"]["train bound"] == "-1700.25"
    assert result.rows["good"]["likelihood"] == "gaussian (sigma_min=0.001)"
    assert result.rows["good"]["status"] == "completed"
    good = md_rows(result.markdown)["good"]
    assert good["bound"] == "ielbo" and good["train bound"] == "-1700.2"
    assert len(result.warnings) == 1, result.warnings
    assert str(damaged) in result.warnings[0] and "\n" not in result.warnings[0]
    for text in where:
        assert text in result.warnings[0], (text, result.warnings[0])


@pytest.mark.parametrize("third_line, where", [
    ("0,1,abc,\n", ("line 3", "train/bound")),
    ("0,1,nan(,\n", ("line 3", "train/bound")),
    (b"0,1,-9\xff1.5,\n", ("line 3", "train/bound")),  # not UTF-8
    ("0,1,-8.5e+", ("line 3",)),  # the file cut off in its last line
    ("0,1,-881.25,,-7\n", ("line 3",)),  # a field more than the header has
    ("0,1,-881.25\n1,3,,-880.5\n", ("line 3",)),  # a field less
], ids=["abc", "nan(", "bad-byte", "truncated", "extra-field", "missing-field"])
def test_a_damaged_metrics_row_or_cell_is_left_blank(runs, caplog, third_line, where):
    start = BAD_METRICS_START.encode()
    bad = write_run(runs / "bad", metrics=start + (third_line if isinstance(third_line, bytes)
                                                   else third_line.encode()))
    result = report(runs, caplog)
    check_rendered(result, bad / "metrics.csv", *where)
    row = result.rows["bad"]
    assert row["train bound"] == "" and row["epochs"] == "" and row["val bound"] == "-880.5"
    assert md_rows(result.markdown)["bad"]["train bound"] == "-"


@pytest.mark.parametrize("epoch", ["inf", "nan", "1.5", "x"])
def test_a_damaged_epoch_leaves_the_row_out_of_the_curves(runs, caplog, epoch):
    bad = write_run(runs / "bad", metrics=BAD_METRICS_START + f"{epoch},1,-881.25,\n")
    result = report(runs, caplog)
    check_rendered(result, bad / "metrics.csv", "line 3", "epoch")
    row = result.rows["bad"]
    assert row["train bound"] == "-881.25" and row["epochs"] == ""  # no epoch: not in the curve


@pytest.mark.parametrize("content", [
    DEEP, "[1, 2]", '"completed"', '{"status": "compl', b'{"status": "\xff"}', "",
], ids=["nested", "list", "string", "truncated", "bad-byte", "empty"])
def test_a_damaged_results_json_skips_its_run(runs, caplog, content):
    bad = write_run(runs / "bad", results=content, metrics=GOOD_METRICS, config=GOOD_CONFIG)
    result = report(runs, caplog)
    check_rendered(result, bad / "results.json")
    assert list(result.rows) == ["good"] and list(md_rows(result.markdown)) == ["good"]


@pytest.mark.parametrize("fields, column, expected", [
    ({"train_bound": "abc"}, "train bound", ""),
    ({"train_bound": True}, "train bound", ""),
    ({"epochs": "two"}, "epochs", ""),
    ({"train_std_min": "x", "test_std_min": 0.5}, "min decoder std", "0.5"),
    ({"non_finite_fields": 5, "val_bound": None}, "val bound", "-880.5"),
    ({"status": ["done"]}, "status", "unknown"),
], ids=["string", "bool", "epochs", "std", "non-finite-fields", "status"])
def test_a_results_field_of_the_wrong_type_is_left_blank(runs, caplog, fields, column,
                                                         expected):
    results = {"bound": "elbo", "status": "completed", **fields}
    bad = write_run(runs / "bad", results=results, metrics=BAD_METRICS_START)
    result = report(runs, caplog)
    name = next(iter(fields))
    check_rendered(result, bad / "results.json", name)
    assert result.rows["bad"][column] == expected
    assert result.rows["bad"]["bound"] == "elbo"


@pytest.mark.parametrize("content, where", [
    (b"likelihood:\n  _target_: intvae.likelihoods.GaussianHead\n  sigma_min: \xff\n", ()),
    (DEEP, ()),
    ("likelihood: [a\n", ()),  # not YAML
    ("likelihood: 5\n", ("likelihood",)),
    ("likelihood: {_target_: intvae.likelihoods.GaussianHead, sigma_min: abc}\n",
     ("likelihood",)),
    ("likelihood: {_target_: [intvae.likelihoods.GaussianHead]}\n", ("likelihood",)),
], ids=["bad-byte", "nested", "not-yaml", "number", "option", "target"])
def test_a_damaged_config_yaml_leaves_its_cells_blank(runs, caplog, content, where):
    bad = write_run(runs / "bad", results={**GOOD_RESULTS, "bound": "elbo"},
                    metrics=GOOD_METRICS, config=content)
    result = report(runs, caplog)
    check_rendered(result, bad / "config.yaml", *where)
    row = result.rows["bad"]
    assert row["likelihood"] == "" and row["bound"] == "elbo" and row["train bound"] == "-1700.25"


def test_damaged_runs_keep_their_labels_and_all_damaged_is_an_error(runs, caplog, capsys):
    bad = write_run(runs / "bad", results=DEEP, metrics=GOOD_METRICS)
    result = report(runs, caplog, "--labels", "B", "G")  # one label per run directory found
    assert result.status == 0 and list(result.rows) == ["G"]
    assert len(result.warnings) == 1 and str(bad / "results.json") in result.warnings[0]
    capsys.readouterr()
    result = report(bad, caplog)
    assert result.status == 2 and len(result.warnings) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no run" in err


INJECTION = "done\n# Heading\n<script>alert(1)</script>|x"


def test_strings_from_a_run_cannot_break_or_inject_into_the_markdown_table(runs, caplog):
    status = INJECTION + "\r\n\u2028- item\\|y & z"
    write_run(runs / "evil", results={**GOOD_RESULTS, "status": status,
                                      "bound": "<img src=x onerror=alert(1)>"},
              metrics=GOOD_METRICS)
    label = "<b>evil</b>\n\n| a | b |"
    result = report(runs, caplog, "--labels", label, "good")
    assert result.status == 0 and result.warnings == []
    lines = result.markdown.splitlines()
    assert len(lines) == 4 and result.markdown.endswith(" |\n")
    assert all(line.startswith("|") for line in lines)
    assert "<" not in result.markdown and ">" not in result.markdown
    rows = md_rows(result.markdown)
    assert list(rows) == ["&lt;b&gt;evil&lt;/b&gt; \\| a \\| b \\|", "good"]
    row = rows["&lt;b&gt;evil&lt;/b&gt; \\| a \\| b \\|"]
    assert row["status"] == ("done # Heading &lt;script&gt;alert(1)&lt;/script&gt;\\|x "
                             "- item\\\\\\|y &amp; z")
    assert row["bound"] == "&lt;img src=x onerror=alert(1)&gt;"
    assert row["train bound"] == "-1700.2" and rows["good"]["status"] == "completed"
    assert result.rows[label]["status"] == status  # the CSV keeps the raw value
    assert result.rows[label]["bound"] == "<img src=x onerror=alert(1)>"


def test_text_that_is_not_utf_8_is_written_escaped(runs, caplog):
    name = "bad\udcff"  # a directory name with the byte 0xff, as Python decodes it
    write_run(runs / name, results={**GOOD_RESULTS, "status": "half\ud800"},
              metrics=GOOD_METRICS)
    result = report(runs, caplog)
    assert result.status == 0 and result.warnings == []
    assert set(result.rows) == {"bad\\udcff", "good"}
    assert result.rows["bad\\udcff"]["status"] == "half\\ud800"
    assert md_rows(result.markdown)["bad\\\\udcff"]["status"] == "half\\\\ud800"


def test_the_report_draws_the_weights_the_results_describe(tmp_path):
    """``Run.checkpoint``: the checkpoint ``results.json`` names, looked up in the run's own
    ``checkpoints/`` (a path elsewhere is not followed), else ``last.ckpt``."""
    from intvae.report.runs import load_run

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"")
    for named, expected in ((str(run / "checkpoints" / "best.ckpt"), "best.ckpt"),
                            ("/elsewhere/checkpoints/best.ckpt", "best.ckpt"),
                            ("/elsewhere/other.ckpt", "last.ckpt"), (None, "last.ckpt")):
        (run / "results.json").write_text(json.dumps({"status": "completed",
                                                      "checkpoint": named}))
        assert load_run(run).checkpoint == run / "checkpoints" / expected, named
