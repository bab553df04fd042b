"""The report's figures of several runs: the bounds per epoch (the paper's figures 1, 2 and
10), the decoder standard deviations (figure 3) and the reconstructions (figures 4-9)."""

import json
import logging
import math
import pickle
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from hydra.utils import instantiate
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from intvae.app.errors import USER_ERRORS, describe
from intvae.app.runs import (
    load_checkpoint,
    load_vae,
)
from intvae.app.wandb_names import NOT_CONFIGURATION
from intvae.report import figures
from intvae.report.results_table import COLUMNS
from intvae.report.runs import Run, series

log = logging.getLogger(__name__)

BULK = 1e5
"""Nats per image beyond which a bound counts as diverged: left out of the clipped panel."""


def colours(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _message(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def bulk_limits(runs: list[Run], keys: tuple[str, ...]) -> tuple[float, float] | None:
    """y limits of the clipped panel: the range of the values of ``keys`` within ``BULK``
    (beyond it a bound has diverged), padded by 10%; None if there are none."""
    values = np.concatenate([series(run, k)[1] for run in runs for k in keys] + [np.zeros(0)])
    values = values[np.isfinite(values) & (np.abs(values) <= BULK)]
    if not len(values):
        return None
    pad = 0.1 * (values.max() - values.min()) or 1.0
    return values.min() - pad, values.max() + pad


def configuration(run: Run) -> str | None:
    """The run's resolved config without its seed and without what only says where and how the
    run is kept (``NOT_CONFIGURATION``, the data's seed, the trainer's root directory), as a
    canonical string; None when the config is unknown (such a run is a group of its own)."""
    if not run.config:
        return None
    config = {k: v for k, v in run.config.items() if k not in NOT_CONFIGURATION}
    for node, key in (("data", "seed"), ("trainer", "default_root_dir")):
        if isinstance(config.get(node), dict):
            config[node] = {k: v for k, v in config[node].items() if k != key}
    return json.dumps(config, sort_keys=True, default=str)


@dataclass
class Group:
    """Runs of one configuration that differ only in their seed (or a single run), and the
    configuration's name."""

    name: str
    runs: list[Run]

    @property
    def label(self) -> str:
        """The name, with the count of seeds where there are several."""
        return f"{self.name} ({len(self.runs)} seeds)" if len(self.runs) > 1 else self.name


def seed_groups(runs: list[Run]) -> list[Group]:
    """``runs`` grouped by ``configuration`` in order of first appearance (runs of one
    configuration with a seed in common stay apart: they are copies or reruns, not seeds); a
    group of several runs is named by its first run's label less its seed ("seed1",
    "seed=1"), a single run by its label."""
    groups: dict[object, list[Run]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(configuration(run) or i, []).append(run)
    split = []
    for members in groups.values():
        if len({run.config.get("seed") for run in members}) < len(members):
            split += [[run] for run in members]  # a seed twice: copies or reruns, not seeds
        else:
            split.append(members)
    result = []
    for members in split:
        name, first = members[0].label, members[0]
        if len(members) > 1:
            # "elbo/seed0" -> "elbo"; a label that is only the seed ("seed0"): its folder's name
            stem = re.sub(r"[/_,-]?seed[=_]?\d+", "", name).strip("/_,-")
            if not stem and first.path is not None:
                stem = first.path.parent.name
            name = stem or name
        result.append(Group(name, members))
    return result


def band(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, lowest, highest) of metric ``key`` over ``runs``, at the epochs every run
    logged."""
    columns = [dict(zip(*series(run, key), strict=True)) for run in runs]
    epochs = sorted(set.intersection(*(set(c) for c in columns)))
    values = np.array([[c[e] for e in epochs] for c in columns]).reshape(len(runs), -1)
    return np.array(epochs, dtype=float), values.mean(0), values.min(0), values.max(0)


def plot_curves(runs: list[Run]) -> Figure:
    """Train (solid) and validation (dashed) bound per epoch and the final test bound (a point),
    one colour per configuration: the paper's figures 1, 2 and 10. Runs that differ only in
    their seed (``seed_groups``) are drawn as their mean with the band from the lowest to the
    highest seed (the test bound as a bar). Upper panel: symlog axis, every value up to a
    diverged -1e29; lower panel: linear axis fitted to the validation and test bounds that
    have not diverged (``bulk_limits``; the train bound if there are none)."""
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    keys = ("train/bound", "val/bound", "test/bound")
    groups = seed_groups(runs)
    for group, colour in zip(groups, colours(len(groups)), strict=True):
        for ax in (top, bottom):
            for key, style in zip(keys, ("-", "--", "none"), strict=True):
                epochs, mean, low, high = band(group.runs, key)
                if style == "none":
                    ax.errorbar(epochs, mean, yerr=[mean - low, high - mean], fmt="o",
                                markersize=7, color=colour, capsize=3)
                    continue
                ax.plot(epochs, mean, linestyle=style, marker=".", markersize=4, color=colour)
                if len(group.runs) > 1:
                    ax.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)
    top.set_yscale("symlog", linthresh=10)
    title = "bound per epoch (symlog axis: all values)"
    if any(len(g.runs) > 1 for g in groups):
        title += "; bands: lowest to highest seed, lines: their mean"
    top.set_title(title, fontsize=10)
    limits = bulk_limits(runs, keys[1:]) or bulk_limits(runs, keys[:1])
    if limits:
        bottom.set_ylim(*limits)
    bottom.set_title("the same, linear axis fitted to the validation and test bounds (train "
                     "values beyond are cut off)", fontsize=10)
    bottom.set_xlabel("epochs done")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (top, bottom):
        ax.set_ylabel("bound (nats per image)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2, label=g.label)
               for g, c in zip(groups, colours(len(groups)), strict=True)]
    handles += [Line2D([], [], color="k", linestyle="-", label="train"),
                Line2D([], [], color="k", linestyle="--", label="validation"),
                Line2D([], [], color="k", linestyle="none", marker="o", label="test (final)")]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return fig


@dataclass
class Decoded:
    """Validation images and what each run's decoder makes of them (z at the encoder's mean):
    ``reconstructions`` (label -> images), ``log10_std`` (label -> log10 sigma over the whole
    batch; decoders with a standard deviation only), ``delta`` (label -> interval half-width),
    ``own_images`` (label -> the images of a run whose data differ from ``images``)."""

    images: torch.Tensor | None = None
    image_shape: tuple[int, int, int] = (1, 28, 28)
    reconstructions: dict[str, torch.Tensor] = field(default_factory=dict)
    log10_std: dict[str, torch.Tensor] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    own_images: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def decode_run(run: Run, data_root: str | None = None, num_images: int = 10):
    """(validation batch, image shape, reconstructions of its first ``num_images`` images,
    log10 decoder std over the batch or None) from the run's ``checkpoints/last.ckpt``, the
    data module built from the run's config (``data.root`` replaced by ``data_root``)."""
    checkpoint, config = load_checkpoint(run.checkpoint)
    cfg = OmegaConf.merge(config, {"data": {"root": data_root}} if data_root else {})
    datamodule = instantiate(cfg.data)
    vae = load_vae(checkpoint, cfg, datamodule.num_pixels)
    datamodule.setup("validate")
    x = next(iter(datamodule.val_dataloader())).cpu()
    n = min(num_images, len(x))
    drawn = figures.draw(vae, x, datamodule.image_shape, n, num_prior_samples=1)
    reconstructions = vae.decode(vae.encode(x[:n]).loc).mean
    return x[:n], datamodule.image_shape, reconstructions, drawn.log10_std


def decode_runs(runs: list[Run], data_root: str | None = None, num_images: int = 10) -> Decoded:
    """``decode_run`` for every run with a checkpoint, one log line each; a run that cannot be
    decoded (data unavailable, unreadable checkpoint) is skipped with a warning."""
    decoded = Decoded()
    for i, run in enumerate(runs, 1):
        if run.checkpoint is None:
            log.info("[%d/%d] %s: no checkpoint, not decoded", i, len(runs), run.label)
            continue
        log.info("[%d/%d] %s: decoding %s", i, len(runs), run.label, run.checkpoint)
        try:
            x, shape, reconstructions, log10_std = decode_run(run, data_root, num_images)
        except (*USER_ERRORS, OSError, RuntimeError, KeyError, EOFError,
                pickle.UnpicklingError) as error:
            log.warning("%s: skipped in the figures: %s", run.label, describe(error))
            continue
        if decoded.images is None:
            decoded.images, decoded.image_shape = x, shape
        if shape != decoded.image_shape:
            log.warning("%s: images of shape %s, not %s: no reconstructions shown", run.label,
                        shape, decoded.image_shape)
        else:
            if x.shape != decoded.images.shape or not torch.equal(x, decoded.images):
                decoded.own_images[run.label] = x
            decoded.reconstructions[run.label] = reconstructions
        if log10_std is not None:
            decoded.log10_std[run.label] = log10_std
            delta = COLUMNS["delta"](run)
            if delta and (run.config.get("bound") or {}).get("interval") is not None:
                decoded.delta[run.label] = delta
    return decoded


def plot_decoder_std(decoded: Decoded) -> Figure:
    """Histograms of log10 of the decoder standard deviations, one per run, over the same
    validation batch, z at the encoder's mean: the paper's figure 3 (the density ELBO's
    standard deviations collapse far below the interval half-width delta, dotted)."""
    fig = Figure(figsize=(8, 4.5))
    if not decoded.log10_std:
        return _message(fig, "no run with a checkpoint and a decoder standard deviation")
    ax = fig.add_subplot()
    finite = {k: v[torch.isfinite(v)].numpy() for k, v in decoded.log10_std.items()}
    pooled = np.concatenate(list(finite.values()))
    bins = np.linspace(pooled.min(), pooled.max() + 1e-9, 81) if len(pooled) else 80
    for (label, values), colour in zip(finite.items(), colours(len(finite)), strict=True):
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, color=colour,
                label=f"{label} (min {10.0 ** values.min():.2g})" if len(values) else label)
    for delta in sorted(set(decoded.delta.values())):
        ax.axvline(math.log10(delta), color="grey", linestyle=":")
        ax.annotate(f"delta = {delta:g}", (math.log10(delta), 1), xycoords=("data", "axes "
                    "fraction"), rotation=90, va="top", ha="right", fontsize=8, color="grey")
    ax.set_xlabel("log10 of the decoder's standard deviation, z = m(x)")
    ax.set_ylabel("pixels")
    ax.set_title("decoder standard deviations over a validation batch", fontsize=10)
    ax.legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


def plot_reconstructions(decoded: Decoded) -> Figure:
    """The validation images (top row) and each run's reconstructions from the encoder's mean,
    one row per run: the paper's figures 4-9 side by side."""
    if decoded.images is None:
        return _message(Figure(figsize=(6, 2)), "no run with a checkpoint")
    rows, labels = [decoded.images], ["original"]
    for label, images in decoded.reconstructions.items():
        if label in decoded.own_images:  # a run on other data: its own originals first
            rows.append(decoded.own_images[label])
            labels.append(f"{label}: its images")
        rows.append(images)
        labels.append(label)
    n = len(decoded.images)
    rows = [torch.cat([r[:n], torch.zeros(n - len(r[:n]), r.shape[1])]) for r in rows]
    grid = figures.tile(torch.cat(rows), decoded.image_shape, n)
    return figures.image_figure(grid, "validation images and reconstructions from m(x)", labels)
