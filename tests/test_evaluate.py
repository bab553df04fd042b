"""The importance-sampled log-likelihood (``intvae.evaluate``): against the exact log P(I) of a
linear-Gaussian model, chunking, defaults, and the command line on a tiny checkpoint."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, reevaluate
from hydra.errors import ConfigCompositionException
from linear_gaussian import LinearGaussianVAE

from intvae.app import evaluate as ev
from intvae.app.config import check_evaluation
from intvae.app.errors import ConfigError
from intvae.app.runs import update_results, write_results
from intvae.app.train import train
from intvae.checks import ParameterError
from intvae.estimate import log_likelihoods
from intvae.intervals import Fixed


@pytest.mark.parametrize("chunk_elements", [1, 10**6])
def test_one_pass_estimates_converge_to_the_exact_log_likelihoods(chunk_elements):
    """K = 2000 samples from a mismatched q, shared by three estimates (two interval policies
    and the density): each is within 0.05 nats of its exact value (Monte Carlo error about
    0.01); chunk_elements=1 draws the samples one at a time."""
    vae = LinearGaussianVAE(w=[1.0, -0.7], b=[0.2, 0.1], s=[0.4, 0.6], shift=0.5, widen=1.3)
    x = np.array([0.9, -0.3])
    exact = {"narrow": vae.log_interval_prob(x - 0.1, x + 0.1),
             "wide": vae.log_interval_prob(x - 0.3, x + 0.3),
             "density": vae.log_marginal_density(x)}
    torch.manual_seed(0)
    batch = torch.tensor(np.tile(x, (4, 1)))
    values = log_likelihoods(vae, [batch], 2000,
                             {"narrow": Fixed(0.1), "wide": Fixed(0.3), "density": None},
                             chunk_elements, progress=False)
    for name, value in values.items():
        assert value.shape == (4,) and value.dtype == torch.float64
        assert abs(value.mean().item() - exact[name]) < 0.05, (name, value, exact[name])


def test_density_log_likelihood_without_an_interval():
    vae = LinearGaussianVAE(w=[1.5], b=[0.3], s=[0.5], shift=0.3)
    torch.manual_seed(0)
    values = log_likelihoods(vae, [torch.full((4, 1), 0.8, dtype=torch.float64)], 500,
                             {"density": None}, progress=False)["density"]
    assert abs(values.mean().item() - vae.log_marginal_density(np.array([0.8]))) < 0.02


def test_default_number_of_samples_and_bad_ones():
    assert ev.resolve_samples("auto", torch.device("cpu")) == 100
    assert ev.resolve_samples("auto", torch.device("cuda")) == 5000
    assert ev.resolve_samples(7, torch.device("cpu")) == 7
    for bad in (0, -3, 2.5, "many", True, None):
        with pytest.raises(ParameterError, match=f"^evaluate.samples={bad!r} is invalid: "):
            check_evaluation({"samples": bad, "split": "test", "chunk_elements": "auto",
                              "limit_batches": None, "bits_per_dim": True})


@pytest.fixture
def tiny_run(compose_train, tmp_path):
    """A trained tiny run: its directory."""
    train(compose_train(*TINY, "evaluate.enabled=false"))
    return tmp_path / "run"


def test_evaluate_a_tiny_checkpoint(tiny_run):
    before = json.loads((tiny_run / "results.json").read_text())
    assert "test_log_likelihood" not in before
    results = reevaluate(f"run={tiny_run}", "samples=6", "compile=false")
    assert results["k"] == 6 and results["eval_images"] == 32
    assert results["log_likelihood_kind"] == "interval"
    assert math.isfinite(results["test_log_likelihood"])
    assert results["bits_per_dim"] > 0 and results["test_log_likelihood_bins"] < 0
    saved = json.loads((tiny_run / "results.json").read_text())
    assert saved == results and saved["val_bound"] == before["val_bound"]
    best = tiny_run / "checkpoints" / "best.ckpt"
    results = reevaluate(f"run={best}", "samples=6", "split=val", "limit_batches=1",
                       "compile=false")
    # kept apart from the test result: tests/test_reevaluate
    entry = results["evaluations"]["val k=6 images=32 Fixed(delta=0.01) best.ckpt"]
    assert entry["eval_images"] == 32 and entry["checkpoint"] == str(best)
    assert "val_log_likelihood" in entry and "val_log_likelihood" not in results


def test_evaluate_on_the_command_line(tiny_run, cli):
    done = cli("intvae.evaluate", f"run={tiny_run}", "samples=3", "compile=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "k: 3" in done.stdout and "test_log_likelihood:" in done.stdout
    assert f"written to {tiny_run / 'results.json'} at the top level" in done.stdout


def test_a_missing_run_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"run={tmp_path / 'missing'} is invalid: no checkpoint"):
        reevaluate(f"run={tmp_path / 'missing'}")
    with pytest.raises(ConfigCompositionException, match="sample"):
        reevaluate(f"run={tmp_path}", "sample=3")


def test_results_are_written_atomically_and_flag_non_finite_values(tmp_path):
    path = tmp_path / "results.json"
    written = write_results(path, {"bound": "ielbo", "val_bound": math.nan,
                                   "test_bound": torch.tensor(-3.5)})
    assert written == {"bound": "ielbo", "val_bound": None, "test_bound": -3.5,
                       "non_finite_fields": ["val_bound"]}
    assert json.loads(path.read_text()) == written
    updated = update_results(path, test_log_likelihood=-math.inf, k=5)
    assert updated["non_finite_fields"] == ["test_log_likelihood", "val_bound"]
    assert updated["k"] == 5 and updated["bound"] == "ielbo"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left
