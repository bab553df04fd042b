"""The multi-seed table of docs/results.md from the run summaries of ``scripts/seed_study.sh``.

    python scripts/seed_table.py docs/results/seeds [--reference elbo]

For every configuration (a folder of seed runs): the number of completed seeds, mean +- sample
standard deviation over the seeds of the test log P(I) (nats, K = 100, the run's own intervals)
and of bits per dimension (under the 8-bit bins), and the smallest decoder standard deviation;
then, for each configuration against the reference, the paired difference in bits per dimension
over the seeds both have (same seed: same data order and initial weights), its mean +- standard
error, and a verdict: a ranking is stated only where a two-sided paired t-test over the seeds
rejects equal means at the 5% level (|mean| > t(0.975, n - 1) x standard error: 12.7 standard
errors for 2 seeds, 4.3 for 3), else "not distinguishable at this budget".
"""

import argparse
import json
import math
import statistics
from pathlib import Path

import scipy.stats


def load(root: Path) -> dict[str, dict[str, dict]]:
    """configuration -> seed -> results.json, completed runs only."""
    found = {}
    for results in sorted(root.glob("*/seed*/results.json")):
        record = json.loads(results.read_text())
        if record.get("status") == "completed":
            found.setdefault(results.parent.parent.name, {})[results.parent.name] = record
    return found


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values):.2g}"


def column(runs: dict[str, dict], key: str) -> list[float]:
    return [r[key] for r in runs.values() if isinstance(r.get(key), (int, float))]


def paired(runs: dict[str, dict], reference: dict[str, dict]) -> str:
    """Mean +- standard error of the per-seed difference in bits/dim, and the verdict."""
    seeds = sorted(set(runs) & set(reference))
    diffs = [runs[s]["bits_per_dim"] - reference[s]["bits_per_dim"] for s in seeds
             if runs[s].get("bits_per_dim") is not None
             and reference[s].get("bits_per_dim") is not None]
    if len(diffs) < 2:
        return f"{len(diffs)} paired seed(s): not enough to compare"
    mean = statistics.mean(diffs)
    error = statistics.stdev(diffs) / math.sqrt(len(diffs))
    critical = scipy.stats.t.ppf(0.975, len(diffs) - 1)
    verdict = ("not distinguishable at this budget" if abs(mean) <= critical * error
               else "lower (better)" if mean < 0 else "higher (worse)")
    return f"{mean:+.3g} +- {error:.2g} over {len(diffs)} seeds: {verdict}"


def table(found: dict[str, dict[str, dict]], reference: str) -> str:
    lines = ["| configuration | seeds | test log P(I) (nats) | bits/dim | min decoder std | "
             f"bits/dim minus {reference}, paired |", "|---|---|---|---|---|---|"]
    for name, runs in found.items():
        stds = column(runs, "test_std_min") + column(runs, "train_std_min")
        lines.append(
            f"| {name} | {len(runs)} | {mean_sd(column(runs, 'test_log_likelihood'))} | "
            f"{mean_sd(column(runs, 'bits_per_dim'))} | "
            f"{min(stds):.2g} | "
            f"{'-' if name == reference else paired(runs, found.get(reference, {}))} |"
            if stds else f"| {name} | {len(runs)} | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--reference", default="elbo")
    args = parser.parse_args()
    print(table(load(args.root), args.reference), end="")


if __name__ == "__main__":
    main()
