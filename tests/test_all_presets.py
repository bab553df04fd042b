"""Every experiment preset (``conf/experiment/``) runs: one real ``python -m intvae.train -m
experiment='glob(*)'`` multirun in a subprocess, each job made tiny (generated data, 64 training
images, one epoch, K = 4 in the evaluation) and put on the CPU by ``budget=short`` (the
documented short variant, whose trainer choice wins over the presets' ``override /trainer:
gpu``). Each job must finish, and the choices and values it recorded must be the ones its preset
stands for, as stated in ``PRESETS`` below from the presets' own descriptions (a new preset
without an entry there fails the test).

The data is the one deliberate departure from the presets: ``data=synthetic`` replaces MNIST,
OMNIGLOT, Frey and binarized MNIST (no download in a test). The binarized presets' Bernoulli
decoder then sees grey values in [0.001, 0.999]; its log-probability is the cross-entropy there,
so those runs exercise the preset, not the binarized data. Everything else (bound, likelihood,
interval, noise, model, samples, tolerances, learning rate) is the preset's own.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
import yaml

from intvae.app.config import CONF_DIR
from intvae.app.sweeps import read_notes

IELBO, ELBO = "intvae.bounds.IELBO", "intvae.bounds.ELBO"
GAUSSIAN = "intvae.likelihoods.GaussianHead"
PAPER_IELBO = {"bound": "ielbo", "likelihood": "gaussian", "interval": "fixed", "noise": "none",
               "model": "mlp_200x2_elu_z25", "samples": 10, "optimizer.lr": 1e-4,
               "bound._target_": IELBO, "bound.normalized": False, "bound.tolerance": 0.0,
               "likelihood._target_": GAUSSIAN, "likelihood.sigma_min": 0.0,
               "likelihood.var_min": 0.0, "noise._target_": None}
PAPER_ELBO = {**PAPER_IELBO, "bound": "elbo", "bound._target_": ELBO, "bound.normalized": None,
              "bound.tolerance": None}
PRESETS = {
    # The exact IELBO of the paper, on MNIST, OMNIGLOT and Frey faces.
    "paper_ielbo_mnist": PAPER_IELBO,
    "paper_ielbo_omniglot": PAPER_IELBO,
    "paper_ielbo_frey": PAPER_IELBO,
    # The authors' code: normalized interval term with a tolerance 1e-7, variance floor 1e-7.
    "authors_ielbo": {**PAPER_IELBO, "bound.normalized": True, "bound.tolerance": 1e-7,
                      "likelihood.var_min": 1e-7},
    # The IRELBO: one hidden ReLU layer, one sample, alpha 2.
    "paper_irelbo_mnist": {**PAPER_IELBO, "bound": "irelbo", "model": "mlp_200x1_relu_z25",
                           "samples": 1, "bound._target_": "intvae.bounds.IRELBO",
                           "bound.alpha": 2.0, "bound.normalized": None,
                           "bound.tolerance": None},
    # The density ELBO without noise (the paper's failure case) and its fixes.
    "paper_elbo_mnist": PAPER_ELBO,
    "paper_elbo_omniglot": PAPER_ELBO,
    "fix_dequantization": {**PAPER_ELBO, "noise": "uniform",
                           "noise._target_": "intvae.noise.UniformDequantization"},
    "fix_gaussian_noise": {**PAPER_ELBO, "noise": "gaussian",
                           "noise._target_": "intvae.noise.GaussianNoise", "noise.std": 0.01},
    "fix_std_floor": {**PAPER_ELBO, "likelihood.sigma_min": 0.01},
    # Other likelihoods: the exact discrete one (IELBO over the 8-bit bins), and two densities.
    "likelihood_bins": {**PAPER_IELBO, "interval": "bins",
                        "interval._target_": "intvae.intervals.Bins"},
    "likelihood_continuous_bernoulli": {
        **PAPER_ELBO, "likelihood": "continuous_bernoulli", "likelihood.sigma_min": None,
        "likelihood.var_min": None,
        "likelihood._target_": "intvae.likelihoods.ContinuousBernoulliHead"},
    "likelihood_logit_normal": {**PAPER_ELBO, "likelihood": "logit_normal",
                                "likelihood._target_": "intvae.likelihoods.LogitNormalHead"},
    # The IWAE paper's sanity check: Bernoulli decoder, 784-200-200-50 tanh, k = 5, lr 1e-3.
    "binarized_mnist_iwae": {"bound": "iwae", "likelihood": "bernoulli", "noise": "none",
                             "model": "mlp_200x2_tanh_z50", "samples": 5, "optimizer.lr": 1e-3,
                             "bound._target_": "intvae.bounds.IWAE",
                             "likelihood._target_": "intvae.likelihoods.BernoulliHead"},
    "binarized_mnist_elbo": {"bound": "elbo", "likelihood": "bernoulli", "noise": "none",
                             "model": "mlp_200x2_tanh_z50", "samples": 5, "optimizer.lr": 1e-3,
                             "bound._target_": ELBO,
                             "likelihood._target_": "intvae.likelihoods.BernoulliHead"},
    # The default (the study's recommendation): the IRELBO, alpha 0.5, on the paper's network.
    "recommended": {**PAPER_IELBO, "bound": "irelbo", "samples": 1,
                    "bound._target_": "intvae.bounds.IRELBO", "bound.alpha": 0.5,
                    "bound.normalized": None, "bound.tolerance": None},
    # A CPU smoke run on generated data with the small model.
    "smoke": {"bound": "ielbo", "likelihood": "gaussian", "interval": "fixed", "noise": "none",
              "model": "mlp_64x1_elu_z8", "samples": 2, "optimizer.lr": 3e-4,
              "bound._target_": IELBO},
}
"""What each preset is, by its description: group choices (bare keys) and config values (dotted
keys; None: the key must be absent)."""

TINY = ["budget=short", "data=synthetic", "data.sizes.train=64", "data.sizes.val=32",
        "data.sizes.test=32", "data.batch_size=32", "trainer.max_epochs=1", "evaluate.samples=4",
        "compile=false", "callbacks.figures.num_prior_samples=16"]
"""Overrides that make every preset's job tiny without changing what the preset chooses."""
GROUPS = ("bound", "likelihood", "interval", "noise", "model")


def select(config: dict, dotted: str):
    """The value at a dotted key of a plain config, None if absent."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def test_every_preset_has_an_expectation():
    on_disk = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert on_disk == set(PRESETS)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The multirun over every preset: {preset: job directory}, and the seconds it took."""
    root = tmp_path_factory.mktemp("presets")
    env = {**os.environ, "INTVAE_OFFLINE": "1",
           "INTVAE_DATA_DIR": str(root / "data"), "WANDB_MODE": "disabled",
           "WANDB_DIR": str(root)}
    env.pop("HYDRA_FULL_ERROR", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "intvae.train", "-m", "experiment=glob(*)",
                           *TINY, f"hydra.sweep.dir={root / 'sweep'}"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-4000:]
    jobs = {}
    for job in sorted((root / "sweep").iterdir()):
        if job.is_dir():
            hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
            jobs[hydra["runtime"]["choices"]["experiment"]] = job
    print(f"multirun over {len(jobs)} presets: {seconds:.1f} s")
    return jobs


@pytest.fixture(scope="module")
def trained(sweep):
    """{preset: the job directory that trained its configuration}: its own, or for a job that
    repeats an earlier job's configuration (``intvae.app.sweeps``: a copy, not trained) that
    job's."""
    notes = read_notes(next(iter(sweep.values())).parent)
    return {preset: job.parent / str(notes[int(job.name)].get("copy_of", job.name))
            for preset, job in sweep.items()}


def test_presets_that_differ_only_in_their_data_are_trained_once(sweep, trained):
    """With the data replaced by the same generated images, the OMNIGLOT, Frey and MNIST
    variants of one paper preset are one configuration: the sweep trains it once."""
    copies = {preset: job.name for preset, job in trained.items() if job != sweep[preset]}
    assert copies == {"paper_elbo_omniglot": sweep["paper_elbo_mnist"].name,
                      "paper_ielbo_mnist": sweep["paper_ielbo_frey"].name,
                      "paper_ielbo_omniglot": sweep["paper_ielbo_frey"].name}


def test_the_multirun_ran_every_preset_once(sweep):
    assert sorted(sweep) == sorted(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_finished_with_its_own_choices(preset, sweep, trained):
    job = sweep[preset]
    results = json.loads((trained[preset] / "results.json").read_text())
    config = yaml.safe_load((trained[preset] / "config.yaml").read_text())
    choices = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"][
        "choices"]
    expected = PRESETS[preset]
    assert results["status"] == "completed", results
    assert (results["epochs"], results["bound"]) == (1, expected["bound"])
    assert math.isfinite(results["test_bound"]) and math.isfinite(results["test_log_likelihood"])
    got = {group: choices[group] for group in GROUPS if group in expected}
    assert got == {group: expected[group] for group in GROUPS if group in expected}
    assert (choices["trainer"], config["trainer"]["accelerator"]) == ("cpu", "cpu")
    assert choices["data"] == "synthetic" and config["data"]["sizes"]["train"] == 64
    assert config["bound"]["samples"] == expected["samples"]
    assert config["samples"] in (None, expected["samples"])  # null: the bound's own K
    values = {key: select(config, key) for key in expected if "." in key}
    assert values == {key: value for key, value in expected.items() if "." in key}
