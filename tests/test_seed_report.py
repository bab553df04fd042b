"""``scripts/seed_table.py``: mean +- standard deviation over seeds and the paired verdict,
checked on hand-made summaries with hand-computed numbers."""

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import seed_table  # noqa: E402


def write(root, name, seed, bits, log_p=-1000.0, status="completed"):
    folder = root / name / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "status": status, "bits_per_dim": bits, "test_log_likelihood": log_p,
        "test_std_min": 1e-3, "train_std_min": 2e-3}))


def test_the_table_states_a_ranking_only_beyond_the_paired_spread(tmp_path):
    for seed, bits in enumerate([3.0, 3.5, 4.0]):
        write(tmp_path, "elbo", seed, bits)
    for seed, bits in enumerate([2.0, 2.6, 3.1]):  # 1.0, 0.9, 0.9 lower: a clear ranking
        write(tmp_path, "better", seed, bits)
    for seed, bits in enumerate([3.5, 3.0, 4.1]):  # +0.5, -0.5, +0.1: no ranking
        write(tmp_path, "same", seed, bits)
    write(tmp_path, "failed", 0, 1.0, status="failed")  # not counted
    rows = {line.split(" | ")[0].strip("| "): line
            for line in seed_table.table(seed_table.load(tmp_path), "elbo").splitlines()[2:]}
    assert set(rows) == {"elbo", "better", "same"}
    # mean 3.5, sample sd 0.5
    assert "| 3 | -1000 +- 0 | 3.5 +- 0.5 | 0.001 | - |" in rows["elbo"]
    # differences -1.0, -0.9, -0.9: mean -0.9333, sd 0.05774, standard error 0.03333, t = 28
    # beyond t(0.975, 2) = 4.303
    assert "-0.933 +- 0.033 over 3 seeds: lower (better)" in rows["better"]
    # differences 0.5, -0.5, 0.1: mean 0.0333, standard error 0.2906, t = 0.11
    assert "+0.0333 +- 0.29 over 3 seeds: not distinguishable at this budget" in rows["same"]
    for seed, bits in enumerate([2.7, 3.1, 3.6]):  # -0.3, -0.4, -0.4: t = -11 beyond 4.303
        write(tmp_path, "slightly", seed, bits)
    for seed, bits in enumerate([2.9, 3.5, 4.1]):  # -0.1, 0.0, +0.1: t = 0
        write(tmp_path, "tied", seed, bits)
    rows = seed_table.table(seed_table.load(tmp_path), "elbo")
    assert "over 3 seeds: lower (better)" in rows.split("slightly")[1].splitlines()[0]
    assert "not distinguishable" in rows.split("| tied")[1].splitlines()[0]
