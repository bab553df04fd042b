"""The importance-sampled log-likelihood (``intvae.evaluate``): against the exact log P(I) of a
linear-Gaussian model, chunking, defaults, and the command line on a tiny checkpoint."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY
from linear_gaussian import LinearGaussianVAE

from intvae import evaluate as ev
from intvae.config import ConfigError
from intvae.intervals import Fixed
from intvae.results import update_results, write_results
from intvae.train import train


@pytest.mark.parametrize("chunk_elements", [1, 10**6])
def test_log_likelihood_converges_to_the_exact_log_p_of_the_interval(chunk_elements):
    """K = 2000 samples from a mismatched q: the estimate is within 0.05 nats of log P(I)
    (Monte Carlo error about 0.01); chunk_elements=1 draws them one sample at a time."""
    vae = LinearGaussianVAE(w=[1.0, -0.7], b=[0.2, 0.1], s=[0.4, 0.6], shift=0.5, widen=1.3)
    x = np.array([0.9, -0.3])
    interval = Fixed(0.1)
    exact = vae.log_interval_prob(x - 0.1, x + 0.1)
    torch.manual_seed(0)
    batch = torch.tensor(np.tile(x, (4, 1)))
    values = ev.log_likelihood(vae, interval, [batch], 2000, chunk_elements, progress=False)
    assert values.shape == (4,) and values.dtype == torch.float64
    assert abs(values.mean().item() - exact) < 0.05, (values, exact)


def test_density_log_likelihood_without_an_interval():
    vae = LinearGaussianVAE(w=[1.5], b=[0.3], s=[0.5], shift=0.3)
    torch.manual_seed(0)
    values = ev.log_likelihood(vae, None, [torch.full((4, 1), 0.8, dtype=torch.float64)], 500,
                               progress=False)
    assert abs(values.mean().item() - vae.log_marginal_density(np.array([0.8]))) < 0.02


def test_default_number_of_samples():
    assert ev.resolve_samples("auto", torch.device("cpu")) == 100
    assert ev.resolve_samples(None, torch.device("cuda")) == 5000
    assert ev.resolve_samples(7, torch.device("cpu")) == 7
    for bad in (0, -3, 2.5, "many", True):
        with pytest.raises(ConfigError, match="evaluate.samples="):
            ev.resolve_samples(bad, torch.device("cpu"))


@pytest.fixture
def tiny_run(compose_train, tmp_path):
    """A trained tiny run: its directory."""
    train(compose_train(*TINY, "evaluate.enabled=false"))
    return tmp_path / "run"


def test_evaluate_a_tiny_checkpoint(tiny_run):
    before = json.loads((tiny_run / "results.json").read_text())
    assert "test_log_likelihood" not in before
    results = ev.main([f"run={tiny_run}", "samples=6", "compile=false"])
    assert results["k"] == 6 and results["eval_images"] == 32
    assert results["log_likelihood_kind"] == "interval"
    assert math.isfinite(results["test_log_likelihood"])
    assert results["bits_per_dim"] == pytest.approx(
        -results["test_log_likelihood_bins"] / (784 * math.log(2)))
    saved = json.loads((tiny_run / "results.json").read_text())
    assert saved == results and saved["val_bound"] == before["val_bound"]
    best = tiny_run / "checkpoints" / "best.ckpt"
    results = ev.main([f"run={best}", "samples=6", "split=val", "limit_batches=1",
                       "compile=false"])
    assert results["eval_images"] == 32 and results["checkpoint"] == str(best)
    assert "val_log_likelihood" in results


def test_evaluate_on_the_command_line(tiny_run, cli):
    done = cli("intvae.evaluate", f"run={tiny_run}", "samples=3", "compile=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "k: 3" in done.stdout and "test_log_likelihood:" in done.stdout


def test_a_missing_run_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"run={tmp_path / 'missing'} is invalid: no checkpoint"):
        ev.main([f"run={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match=r"unknown keys: \['sample'\]"):
        ev.main([f"run={tmp_path}", "sample=3"])


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
