"""The evaluation app: ``intvae-evaluate run=<run dir or checkpoint> [key=value ...]``.

A Hydra app like ``intvae-train`` (same override syntax, ``--help``, ``--cfg job``; root config
``conf/evaluate.yaml``). It estimates the importance-sampled log-likelihood of a trained run's
test (or validation) images (``intvae.estimate``, ``docs/math.md``) and adds the result to the
run's ``results.json`` (and its W&B summary); it writes nothing else. ``intvae.app.train`` calls
``evaluate`` at the end of every run.

    log P(I(x)) ~ log (1/K) sum_k P(I(x) | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x),

under the run's own intervals, those of its bound (``evaluation_interval``: a bound's
``interval`` may differ from the root one), the same for the final evaluation and every
re-evaluation; for a likelihood without interval probabilities (bernoulli, beta) the density
log p(x) instead (IWAE_K). A re-evaluation is seeded like the run's own evaluation, so the same
K on the same weights gives the same number. Bits per dimension, -log P / (D log 2), need a
discrete likelihood: intervals of neighbouring 8-bit levels that do not overlap. Where the run's
intervals are not one (the paper's fixed delta), the same samples also give log P under the
8-bit bins (``intvae.intervals.Bins``), so every run gets bits per dimension; the samples are
shared, each decoded once (``intvae.estimate.log_likelihoods``).

Where the result goes (``intvae.app.runs.place_evaluation``): an evaluation of the whole test
split is the run's test result, the top-level ``test_log_likelihood``, ``k``, ``bits_per_dim``,
... that the README, the report and the W&B ``test/`` keys show; the test result it replaces
moves to ``evaluations[<key>]``. Any other evaluation (``split=val``, or ``limit_batches=N``
leaving images out) is kept apart under ``evaluations[<key>]``, the key naming split, K,
images, intervals and checkpoint (``"val k=100 images=10000 Fixed(delta=0.01) best.ckpt"``),
and never changes the top level. The app logs (to stdout) where the result went, then prints
the run's updated results as YAML.

K defaults to 5000 on a GPU, the papers' value, and to 100 on the CPU, where 5000 samples of
the 10,000 MNIST test images would take hours. Checkpoints are read with ``weights_only=True``
and their config is admitted only if it names intvae's own classes (``intvae.app.runs``): a
corrupt, truncated or malicious file ends the program with one line naming it.
"""

# isort: off
import intvae.app.tool_caches  # noqa: F401  (first: keeps the tools' caches in intvae's cache folder)
# isort: on
import logging
import math
import time
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from intvae.app import wandb_run
from intvae.app.build import select_kernels
from intvae.app.config import CONF_MODULE, check_evaluation
from intvae.app.errors import one_line_errors
from intvae.app.launch import gpu_share
from intvae.app.resume import EVALUATION_STREAM, stage_seed
from intvae.app.runs import (
    EVALUATIONS,
    RESULTS_FILE,
    find_checkpoint,
    load_checkpoint,
    load_vae,
    place_evaluation,
    read_results,
    write_results,
)
from intvae.estimate import DEFAULT_CHUNK_ELEMENTS, log_likelihoods, resolve_chunk_elements
from intvae.intervals import Bins
from intvae.likelihoods import INTERVAL
from intvae.networks import VAE

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = {"cpu": 100, "cuda": 5000}


def resolve_samples(samples, device: torch.device) -> int:
    """K: ``samples``, or for ``auto`` the default of ``device``'s type."""
    if samples == "auto":
        return DEFAULT_SAMPLES.get(device.type, DEFAULT_SAMPLES["cuda"])
    return samples


def likelihood_kind(vae: VAE) -> str:
    """``"interval"`` if the decoder's likelihood has interval probabilities (its declared
    ``capabilities``), else ``"density"``."""
    return INTERVAL if INTERVAL in vae.head.likelihood.capabilities else "density"


def evaluation_interval(cfg):
    """The intervals a run is evaluated under, built from its config ``cfg`` (the training
    app's, or the resolved one its checkpoint carries): the bound's own ``interval`` node, the
    intervals it trained with (``${interval}`` unless set apart, e.g.
    ``'bound.interval={_target_: intvae.intervals.Fixed, delta: 0.05}'``), else, for a density
    bound, the root ``interval`` (used where the decoder has interval probabilities). Training's
    final evaluation and ``reevaluate`` both use it, so a run is re-evaluated under the intervals
    of its own evaluation."""
    node = (cfg.get("bound") or {}).get("interval")
    return instantiate(cfg.interval if node is None else node)


def evaluate(vae: VAE, interval, datamodule, samples, device: torch.device,
             split: str = "test", chunk_elements: int | str = DEFAULT_CHUNK_ELEMENTS,
             limit_batches: int | None = None, progress: bool = True,
             bits_per_dim: bool = True) -> dict:
    """The ``results.json`` fields of the log-likelihood of ``split`` (test or val), on one
    device (exact: every image counted once): ``<split>_log_likelihood`` under ``interval`` (or
    the density), ``log_likelihood_kind``, ``k``, ``eval_images``, ``eval_split``,
    ``eval_whole_split`` (false when ``limit_batches`` left images out), ``eval_interval`` (the
    interval's repr; null for the density), and with ``bits_per_dim`` the estimate under the
    8-bit bins, ``<split>_log_likelihood_bins``, and ``bits_per_dim`` (module docstring). Which
    of them say the run's test result is ``intvae.app.runs.evaluation_place``'s to decide. The
    settings are checked by the caller (``check_evaluation``)."""
    k = resolve_samples(samples, device)
    datamodule.setup("test" if split == "test" else "validate")
    loader = list(datamodule.whole_split(split))  # never a DDP rank's shard
    batches = [x.to(device) for x in loader[:limit_batches]]
    kind = likelihood_kind(vae.to(device))
    estimates = {"own": interval if kind == INTERVAL else None}
    discrete = kind == INTERVAL and interval.is_discrete(datamodule.levels, datamodule.eps)
    if kind == INTERVAL and not discrete and bits_per_dim:
        estimates["bins"] = Bins(datamodule.levels, datamodule.eps)
    if chunk_elements == "auto" and device.type == "cuda" and gpu_share() > 1:
        # several runs share this GPU (hydra.callbacks.pin_gpus.runs_per_gpu): each sizes its
        # chunks from its share of the free memory
        chunk_elements = max(1, resolve_chunk_elements("auto", device) // gpu_share())
    start = time.perf_counter()
    values = log_likelihoods(vae, batches, k, estimates, chunk_elements, progress)
    fields = {f"{split}_log_likelihood": values["own"].mean().item(),
              "log_likelihood_kind": kind, "k": k, "eval_images": len(values["own"]),
              "eval_split": split, "eval_whole_split": len(batches) == len(loader),
              "eval_interval": repr(interval) if kind == INTERVAL else None,
              "bits_per_dim": None}
    if "bins" in values:
        fields[f"{split}_log_likelihood_bins"] = values["bins"].mean().item()
    if discrete or "bins" in values:
        log_p = values["own" if discrete else "bins"].mean().item()
        fields["bits_per_dim"] = -log_p / (datamodule.num_pixels * math.log(2))
    fields["eval_seconds"] = round(time.perf_counter() - start, 1)
    return fields


def where_written(path: Path, before: dict, after: dict, key: str | None) -> str:
    """One line saying where in ``path`` an evaluation went (``key``, from
    ``intvae.app.runs.place_evaluation``) and, for the run's test result, the key the test
    result it replaced moved to (``before`` and ``after``: the results around it)."""
    if key is not None:
        return (f"written to {path} under {EVALUATIONS}[{key!r}] (not the whole test split); "
                "the run's test result, at the top level, is unchanged")
    moved = [k for k in after.get(EVALUATIONS) or {} if k not in (before.get(EVALUATIONS) or {})]
    return (f"written to {path} at the top level, as the run's test result" +
            "".join(f"; the previous one kept under {EVALUATIONS}[{k!r}]" for k in moved))


def reevaluate(cfg: DictConfig) -> dict:
    """Evaluate the run ``cfg.run`` as ``cfg`` says, under the run's own intervals
    (``evaluation_interval``) and seeded like the run's own evaluation (the same K gives its
    number again); put the fields in their place in its ``results.json``
    (``intvae.app.runs.place_evaluation``: the top level only for the whole test split) and in
    its W&B summary, log where, and return the results written."""
    check_evaluation(cfg, "")
    ckpt, run_dir = find_checkpoint(cfg.run, cfg.checkpoint)
    path = run_dir / RESULTS_FILE
    read_results(path)  # an unreadable record fails before the work, not after
    checkpoint, config = load_checkpoint(ckpt)
    data = {k: v for k, v in OmegaConf.to_container(cfg.data).items() if v is not None}
    run_cfg = OmegaConf.merge(config, {"data": data})
    datamodule = instantiate(run_cfg.data)
    vae = load_vae(checkpoint, run_cfg, datamodule.num_pixels)
    interval = evaluation_interval(run_cfg)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    grey = torch.full((2, vae.num_pixels), 0.5)
    probe = {"own": interval if likelihood_kind(vae) == INTERVAL else None}
    select_kernels(vae, cfg.compile, lambda: log_likelihoods(vae, [grey], 2, probe, progress=False))
    stage_seed(run_cfg.seed, EVALUATION_STREAM)
    fields = evaluate(vae, interval, datamodule, cfg.samples, device, cfg.split,
                      cfg.chunk_elements, cfg.limit_batches, bits_per_dim=cfg.bits_per_dim)
    before = read_results(path)
    weights = cfg.checkpoint if Path(cfg.run).expanduser().is_dir() else str(ckpt)
    results, key = place_evaluation(before, {**fields, "checkpoint": str(ckpt), "weights": weights})
    results = write_results(path, results)
    log.info("%s", where_written(path, before, results, key))
    wandb_run.add_evaluation(run_dir, config, fields, key)  # the run's W&B summary, if any
    return results


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Hydra's entry point: ``reevaluate`` (its line saying where the result went is logged to
    stdout first) and print the run's updated results as YAML."""
    print(OmegaConf.to_yaml(reevaluate(cfg)), end="")


if __name__ == "__main__":
    main()
