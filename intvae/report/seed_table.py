"""The multi-seed table of ``docs/results.md``: runs that differ only in their seed, compared.

For every configuration (``plots.seed_groups``: a group of runs whose configs differ only in the
seed): the number of completed seeds, mean +- sample standard deviation over the seeds of the
test log P(I) (nats, the run's own intervals) and of bits per dimension (under the 8-bit bins),
and the smallest decoder standard deviation; then, against a reference configuration, the paired
difference in bits per dimension over the seeds both have (same seed: same data order and
initial weights), its mean +- standard error, and a verdict: a ranking is stated only where a
two-sided paired t-test over the seeds rejects equal means at the 5% level (|mean| > t(0.975,
n - 1) x standard error: 12.7 standard errors for 2 seeds, 4.3 for 3), else "not
distinguishable at this budget". ``intvae-report --reference NAME`` writes it as ``seeds.md``.
"""

import math
import statistics

import scipy.stats

from intvae.report.plots import Group


def _completed(group: Group) -> dict[int, dict]:
    """seed -> results.json fields, completed runs only."""
    return {run.results.get("seed"): run.results for run in group.runs
            if run.results.get("status") == "completed"}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values):.2g}"


def column(runs: dict[int, dict], key: str) -> list[float]:
    return [r[key] for r in runs.values() if isinstance(r.get(key), (int, float))]


def paired(runs: dict[int, dict], reference: dict[int, dict]) -> str:
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


def table(groups: list[Group], reference: str) -> str:
    """The markdown table, rows in the groups' order, sorted by name."""
    found = {g.name: _completed(g) for g in sorted(groups, key=lambda g: g.name)}
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
