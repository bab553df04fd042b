"""Failures: corrupt and truncated checkpoints, a NaN injected mid-run, an output directory
holding a finished run, and every invalid value of ``docs/configuration.md``'s table with its
exact message. (Two processes fetching one dataset at once: ``tests/test_data_fetch.py::
test_two_processes_fetching_at_once``.)"""

import json
import logging
import re
import runpy
import sys
from typing import NamedTuple

import pytest
import torch
from conftest import REPO, TINY, reevaluate
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from intvae.app.config import CONF_DIR, run_id
from intvae.app.errors import ConfigError
from intvae.app.module import VAEModule
from intvae.app.runs import read_checkpoint
from intvae.app.train import main, train

DOC = REPO / "docs" / "configuration.md"


def run_main(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["intvae.train", *args])
    main()


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0].removeprefix("error: ")


def snapshot(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".log" and ".hydra" not in p.parts}


@pytest.fixture
def finished_run(compose_train, tmp_path):
    """A finished tiny run (two epochs): its directory."""
    train(compose_train(*TINY, "trainer.max_epochs=2", "evaluate.enabled=false"))
    return tmp_path / "run"


# ------------------------------------------------------------------ checkpoints


def test_corrupt_and_truncated_checkpoints_are_named_and_nothing_is_deleted(
        finished_run, compose_train, monkeypatch, capsys):
    checkpoints = finished_run / "checkpoints"
    last = checkpoints / "last.ckpt"
    data = last.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 64,
             "empty": b""}
    for name, content in cases.items():
        bad = checkpoints / f"{name}.ckpt"
        bad.write_bytes(content)
        before = snapshot(finished_run)
        with pytest.raises(SystemExit) as exit_info:
            run_main(monkeypatch, *TINY, f"ckpt_path={bad}", "trainer.max_epochs=3")
        assert exit_info.value.code == 1
        assert error_line(capsys).startswith(
            f"ckpt_path={bad} is invalid: not a readable checkpoint, truncated or corrupt (")
        assert snapshot(finished_run) == before  # nothing written, nothing deleted
        with pytest.raises(ConfigError, match=f"run={re.escape(str(bad))} is invalid: not a "
                                              "readable checkpoint, truncated or corrupt"):
            reevaluate(f"run={bad}", "compile=false")
    # The evaluation's command line: one line, exit status 1.
    monkeypatch.setattr(sys, "argv", ["intvae.evaluate", f"run={checkpoints / 'truncated.ckpt'}"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("intvae.evaluate", run_name="__main__")
    assert exit_info.value.code == 1
    assert error_line(capsys).startswith(f"run={checkpoints / 'truncated.ckpt'} is invalid: not "
                                         "a readable checkpoint")
    # resume=auto meets a corrupt last.ckpt (an unfinished run): named, earlier ones kept.
    (finished_run / "results.json").unlink()
    last.write_bytes(data[:100])
    with pytest.raises(ConfigError, match=r"resume=auto: checkpoint=.*last\.ckpt is invalid: "
                                          r"not a readable checkpoint.*pass ckpt_path="):
        train(compose_train(*TINY, "trainer.max_epochs=2", "evaluate.enabled=false"))
    assert (checkpoints / "best.ckpt").is_file() and read_checkpoint(checkpoints / "best.ckpt")


# ------------------------------------------------------------------ NaN mid-run


@pytest.fixture
def nan_at_step_2(monkeypatch):
    """The loss of step 2 (the first step of epoch 1) becomes NaN, and so its gradients."""
    original = VAEModule.training_step

    def poisoned(self, x, batch_idx):
        loss = original(self, x, batch_idx)
        if self.global_step == 2:
            loss = loss * float("nan")
            self.last_loss = loss.detach()
        return loss

    monkeypatch.setattr(VAEModule, "training_step", poisoned)


def assert_finite_checkpoints(run):
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        weights = read_checkpoint(ckpt)["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point()), ckpt


def test_a_nan_mid_run_is_skipped_counted_and_logged(nan_at_step_2, compose_train, tmp_path,
                                                      caplog):
    with caplog.at_level(logging.WARNING, logger="intvae.callbacks"):
        results = train(compose_train(*TINY, "trainer.max_epochs=2", "guard.mode=skip"))
    assert results["status"] == "completed" and results["non_finite_steps"] == 1
    assert json.loads((tmp_path / "run" / "results.json").read_text())["non_finite_steps"] == 1
    assert re.search(r"non-finite loss in run .* at step 2 .*update skipped", caplog.text)
    assert_finite_checkpoints(tmp_path / "run")


def test_a_nan_mid_run_stops_the_run_with_stop(nan_at_step_2, monkeypatch, capsys, app_env,
                                               tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_main(monkeypatch, *TINY, "trainer.max_epochs=2", "guard.mode=stop",
                 f"hydra.run.dir={run}")
    assert exit_info.value.code == 1
    assert re.fullmatch(r"non-finite loss in run .* at step 2 \(epoch 1\); stopped "
                        r"\(guard.mode=stop\) before the update: .*", error_line(capsys))
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "stopped" and "at step 2" in results["error"]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2  # epoch 0's
    assert_finite_checkpoints(run)


# ------------------------------------------------------------------ finished runs


def test_a_finished_run_is_never_overwritten_silently(finished_run, compose_train, monkeypatch,
                                                      capsys):
    before = snapshot(finished_run)
    same = (*TINY, "trainer.max_epochs=2", "evaluate.enabled=false")  # finished_run's settings
    with pytest.raises(SystemExit):
        run_main(monkeypatch, *same, f"hydra.run.dir={finished_run}")
    last = finished_run / "checkpoints" / "last.ckpt"
    assert error_line(capsys) == (
        f"hydra.run.dir={finished_run} is invalid: it holds a finished run (results.json: status "
        "completed); choose another hydra.run.dir (hydra.sweep.dir with -m), pass "
        f"ckpt_path={last} to continue it (e.g. with a larger trainer.max_epochs), or "
        "overwrite=true to move it aside and start again")
    with pytest.raises(SystemExit):  # other settings: named, and refused all the same
        run_main(monkeypatch, *TINY, f"hydra.run.dir={finished_run}")
    assert error_line(capsys).startswith(
        f"hydra.run.dir={finished_run} is invalid: the finished run it holds has other settings "
        "than this command's: evaluate.enabled (false -> true), trainer.max_epochs (2 -> 1); "
        "overwrite=true moves it aside")
    assert snapshot(finished_run) == before
    first_id = run_id(finished_run)
    results = train(compose_train(*TINY, "overwrite=true", "evaluate.enabled=false"))
    assert results["status"] == "completed" and results["epochs"] == 1
    moved = finished_run / "overwritten" / "1"
    assert json.loads((moved / "results.json").read_text())["epochs"] == 2
    assert (moved / "checkpoints" / "last.ckpt").read_bytes() == before[last.relative_to(
        finished_run)]
    assert run_id(finished_run) != first_id  # a new W&B run for the new run
    with pytest.raises(ConfigError, match="overwrite=true is invalid with ckpt_path="):
        train(compose_train(*TINY, "overwrite=true", f"ckpt_path={last}"))


# ------------------------------------------------------------------ the documented table


def code(cell: str) -> str:
    """The text of a table cell that is one code span."""
    return cell[1:-1] if len(cell) > 1 and cell[0] == cell[-1] == "`" else cell


class Row(NamedTuple):
    """A row of the checked table: the key (the first cell's first code span, e.g. ``alpha`` of
    ```alpha` (vr)``), the words in parentheses after it (``("vr",)``), the default cell, the
    invalid example and the message (code spans unwrapped)."""

    key: str
    qualifiers: tuple[str, ...]
    default: str
    example: str
    message: str


def documented_rows() -> list[Row]:
    """The rows of the checked table of ``docs/configuration.md``."""
    table = DOC.read_text().split("<!-- checked: begin -->")[1].split("<!-- checked: end -->")[0]
    lines = [line.strip() for line in table.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| key |") and lines[1].startswith("|---"), lines[:2]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == 5, line
        key = re.match(r"`([^`]+)`", cells[0])
        words = re.search(r"\(([^)]*)\)", cells[0])
        qualifiers = tuple(w.strip(" `") for w in words.group(1).split(",")) if words else ()
        rows.append(Row(key.group(1) if key else cells[0], qualifiers, cells[1], code(cells[3]),
                        code(cells[4])))
    return rows


def pattern(message: str) -> str:
    return ".*".join(re.escape(part) for part in message.split("…"))


CHECKED = [pytest.param(row.example.split(), row.message, id=row.example)
           for row in documented_rows() if row.example != "-"]


@pytest.mark.parametrize("overrides, message", CHECKED)
def test_every_documented_message(overrides, message, monkeypatch, capsys, app_env, tmp_path):
    flags = [o for o in overrides if o.startswith("-")]  # -m first: argparse wants the
    overrides = [o for o in overrides if not o.startswith("-")]  # overrides on one side
    with pytest.raises(SystemExit) as exit_info:
        run_main(monkeypatch, *flags, *TINY, *overrides, f"hydra.run.dir={tmp_path}/run",
                 f"hydra.sweep.dir={tmp_path}/sweep")
    assert exit_info.value.code == 1
    if message.startswith("Hydra: "):
        err = capsys.readouterr().err
        assert re.search(pattern(message.removeprefix("Hydra: ")), err), err[-3000:]
    else:
        assert re.fullmatch(pattern(message), error_line(capsys))


def test_the_table_covers_every_group_and_root_key(compose_train):
    keys = {row.key for row in documented_rows()}
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"
              and not p.name.startswith("_")}
    root = set(compose_train()) - {"paths"}
    for name in sorted(groups | root | {"hydra/launcher"}):
        assert any(key == name or key.startswith(f"{name}.") for key in keys), name


def option_of(word: str, key: str) -> str | None:
    """``group=word`` if ``word`` names an option of the group ``key`` is in (``noise.std``
    (gaussian): ``noise=gaussian``), else of the one group that has it (``alpha`` (vr):
    ``bound=vr``); None if none or several do."""
    group = key.split(".")[0]
    if (CONF_DIR / group / f"{word}.yaml").is_file():
        return f"{group}={word}"
    groups = sorted(p.parent.name for p in CONF_DIR.glob(f"*/{word}.yaml"))
    return f"{groups[0]}={word}" if len(groups) == 1 else None


DEFAULTS = [pytest.param(row, id=f"{row.key} {' '.join(row.qualifiers)}".strip())
            for row in documented_rows()
            if row.default.startswith("`") and not row.default.startswith("`$")]


@pytest.mark.parametrize("row", DEFAULTS)
def test_every_documented_default_is_what_runs(row, compose_train):
    """The default column of the table is the composed default config: the root config with
    its default experiment (``experiment=recommended``), under each option the row names
    (``alpha`` (vr): with ``bound=vr``); a key is compared as written (``${delta}``) or as
    resolved, a group by its chosen option."""
    written = re.match(r"`([^`]*)`", row.default).group(1)
    default = OmegaConf.to_container(OmegaConf.create({"v": written}) if written.startswith(
        "${") else OmegaConf.create(f"v: {written}"), resolve=False)["v"]
    group, _, option = row.key.partition(".")
    option = option.split(".")[0]
    implied = [f"{group}={option}"] if (CONF_DIR / group / f"{option}.yaml").is_file() else []
    runs = [[o] for o in (option_of(w, row.key) for w in row.qualifiers) if o] or [[]]
    for overrides in runs:
        cfg = compose_train(*implied, *overrides)
        if (CONF_DIR / row.key).is_dir():  # a config group: its chosen option
            assert HydraConfig.get().runtime.choices.get(row.key) == default, row
            continue
        raw = OmegaConf.to_container(cfg, resolve=False)
        for part in row.key.split("."):
            raw = raw[part]
        resolved = OmegaConf.select(cfg, row.key)
        resolved = OmegaConf.to_container(resolved) if OmegaConf.is_config(resolved) else resolved
        assert default in (raw, resolved), (row.key, overrides, default, raw, resolved)
