"""Runs that differ only in their seed: grouped (``plots.seed_groups``), drawn as a band, and
compared in ``seeds.md`` (``intvae.report.seed_table``: mean +- standard deviation over seeds and
the paired verdict), checked on hand-made summaries with hand-computed numbers; and the
summaries committed under ``docs/results/seeds`` rebuild the tables of ``docs/results.md``
exactly."""

import csv
import json
import re

import numpy as np
import yaml
from conftest import REPO

from intvae.report import __main__ as cli
from intvae.report import plots, seed_table
from intvae.report.runs import load_runs


def write(root, name, seed, bits, log_p=-1000.0, status="completed", curve=(1.0, 2.0)):
    folder = root / name / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "status": status, "seed": seed, "bits_per_dim": bits, "test_log_likelihood": log_p,
        "test_std_min": 1e-3, "train_std_min": 2e-3}))
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "seed": seed, "bound": {"_target_": "intvae.bounds.ELBO", "samples": 1}, "name": name,
        "data": {"seed": seed}, "paths": {"output_dir": str(folder)},
        "trainer": {"max_epochs": 2, "default_root_dir": str(folder)}}))
    lines = ["epoch,step,train/bound"] + [f"{e},{e + 1},{v + seed}" for e, v in enumerate(curve)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def groups_of(root):
    return plots.seed_groups(load_runs([root]))


def rows(root, reference):
    text = seed_table.table(groups_of(root), reference)
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}


def test_the_table_states_a_ranking_only_beyond_the_paired_spread(tmp_path):
    for seed, bits in enumerate([3.0, 3.5, 4.0]):
        write(tmp_path, "elbo", seed, bits)
    for seed, bits in enumerate([2.0, 2.6, 3.1]):  # 1.0, 0.9, 0.9 lower: a clear ranking
        write(tmp_path, "better", seed, bits)
    for seed, bits in enumerate([3.5, 3.0, 4.1]):  # +0.5, -0.5, +0.1: no ranking
        write(tmp_path, "same", seed, bits)
    found = rows(tmp_path, "elbo")
    assert set(found) == {"elbo", "better", "same"}
    # mean 3.5, sample sd 0.5
    assert "| 3 | -1000 +- 0 | 3.5 +- 0.5 | 0.001 | - |" in found["elbo"]
    # differences -1.0, -0.9, -0.9: mean -0.9333, sd 0.05774, standard error 0.03333, t = 28
    # beyond t(0.975, 2) = 4.303
    assert "-0.933 +- 0.033 over 3 seeds: lower (better)" in found["better"]
    # differences 0.5, -0.5, 0.1: mean 0.0333, standard error 0.2906, t = 0.11
    assert "+0.0333 +- 0.29 over 3 seeds: not distinguishable at this budget" in found["same"]
    for seed, bits in enumerate([2.7, 3.1, 3.6]):  # -0.3, -0.4, -0.4: t = -11 beyond 4.303
        write(tmp_path, "slightly", seed, bits)
    for seed, bits in enumerate([2.9, 3.5, 4.1]):  # -0.1, 0.0, +0.1: t = 0
        write(tmp_path, "tied", seed, bits)
    found = rows(tmp_path, "elbo")
    assert "over 3 seeds: lower (better)" in found["slightly"]
    assert "not distinguishable" in found["tied"]


def test_only_completed_runs_count_and_other_configurations_stay_apart(tmp_path):
    for seed, bits in enumerate([3.0, 3.5]):
        write(tmp_path, "elbo", seed, bits)
    write(tmp_path, "elbo", 2, 1.0, status="failed")  # in the group, not in the numbers
    write(tmp_path, "iwae", 0, 2.0)  # another config: a group of its own
    groups = groups_of(tmp_path)
    assert [(g.label, len(g.runs)) for g in groups] == [("elbo (3 seeds)", 3), ("iwae/seed0", 1)]
    found = rows(tmp_path, "elbo")
    assert "| elbo | 2 | -1000 +- 0 | 3.25 +- 0.35 |" in found["elbo"]


def test_the_curves_show_the_band_over_seeds(tmp_path):
    for seed in range(3):
        write(tmp_path, "elbo", seed, 3.0, curve=(-10.0, -5.0))  # seeds add 0, 1, 2
    epochs, mean, low, high = plots.band(groups_of(tmp_path)[0].runs, "train/bound")
    assert epochs.tolist() == [1, 2]
    assert mean.tolist() == [-9.0, -4.0] and low.tolist() == [-10.0, -5.0]
    assert high.tolist() == [-8.0, -3.0]
    fig = plots.plot_curves(load_runs([tmp_path]))
    bands = [c for c in fig.axes[0].collections if c.get_paths()]
    polygon = bands[0].get_paths()[0].vertices
    assert np.isclose(polygon[:, 1].min(), -10.0) and np.isclose(polygon[:, 1].max(), -3.0)


def test_a_bad_reference_is_named(tmp_path, capsys):
    for seed in range(2):
        write(tmp_path, "elbo", seed, 3.0)
    assert cli.main([str(tmp_path), "--out", str(tmp_path / "out"), "--reference", "nope"]) == 2
    assert "--reference nope: no such configuration; the configurations are elbo" in \
        capsys.readouterr().err


def page_tables() -> list[list[str]]:
    """The tables of docs/results.md's seed section, as lists of lines."""
    text = (REPO / "docs" / "results.md").read_text()
    section = text.split("## Three seeds per configuration")[1].split("\n## ")[0]
    found, current = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return found


def test_the_committed_summaries_rebuild_the_pages_tables(tmp_path):
    """``intvae-report docs/results/seeds --reference elbo ielbo_d0.01`` writes exactly the
    page's two tables, and its per-run table has one row per committed summary, whose bits/dim
    is that summary's (read here with json)."""
    seeds = REPO / "docs" / "results" / "seeds"
    out = tmp_path / "report"
    assert cli.main([str(seeds), "--out", str(out), "--reference", "elbo", "ielbo_d0.01"]) == 0
    built = [block.splitlines() for block in (out / "seeds.md").read_text().split("\n\n")]
    assert built == page_tables()
    summaries = sorted(seeds.glob("*/seed*/results.json"))
    assert len(summaries) == 42
    with (out / "table.csv").open() as file:
        table = {row["run"]: row for row in csv.DictReader(file)}
    for path in summaries:
        label = f"{path.parent.parent.name}/{path.parent.name}"
        want = json.loads(path.read_text())["bits_per_dim"]
        assert float(table[label]["bits/dim"]) == want, label
    assert all(re.fullmatch(r".+ \(3 seeds\)", g.label) for g in groups_of(seeds))


def test_copies_with_the_same_seed_are_not_seeds(tmp_path):
    write(tmp_path, "elbo", 0, 3.0)
    write(tmp_path / "rerun", "elbo", 0, 3.1)  # the same configuration and seed again
    assert [len(g.runs) for g in groups_of(tmp_path)] == [1, 1]


def test_the_committed_long_runs_rebuild_the_pages_table(tmp_path):
    """``intvae-report docs/results/long`` writes exactly the table of the page's section *A
    hundred epochs*, and the IRELBO's mean +- sd over its three seeds that the section states."""
    out = tmp_path / "report"
    assert cli.main([str(REPO / "docs" / "results" / "long"), "--out", str(out),
                     "--reference", "irelbo_a0.5_mlp2elu"]) == 0
    text = (REPO / "docs" / "results.md").read_text()
    section = text.split("## A hundred epochs")[1].split("\n## ")[0]
    assert (out / "table.md").read_text().strip() in section
    row = next(line for line in (out / "seeds.md").read_text().splitlines()
               if line.startswith("| irelbo_a0.5_mlp2elu |"))
    _, seeds, log_p, bits, _, _ = (cell.strip() for cell in row.strip("|").split("|"))
    assert seeds == "3" and f"**{bits}** (3 seeds)" in section and f"**{log_p}**" in section


def test_the_readme_states_the_default_runs_numbers(tmp_path):
    """The README's numbers of the default configuration over three seeds are the row that
    ``intvae-report docs/results/default`` writes into ``seeds.md``."""
    out = tmp_path / "report"
    assert cli.main([str(REPO / "docs" / "results" / "default"), "--out", str(out)]) == 0
    row = (out / "seeds.md").read_text().splitlines()[2]
    name, seeds, log_p, bits, std, _ = (cell.strip() for cell in row.strip("|").split("|"))
    assert (name, seeds) == ("default", "3")
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"gave {bits} bits per dimension and a test log P(I) of {log_p} nats, smallest "
            f"decoder standard deviation {std}") in readme
