"""Fixtures of the app tests (test_train, test_module, test_evaluate, test_configs): a tiny,
offline run configuration, the composed root config, and the command line as a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from intvae.app.config import CONF_DIR, CONF_MODULE

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "data=synthetic", "model=mlp_64x1_elu_z8", "data.sizes.train=64", "data.sizes.val=32",
    "data.sizes.test=32", "data.batch_size=32", "samples=2", "trainer.max_epochs=1",
    "evaluate.samples=4", "compile=false", "callbacks.figures.num_prior_samples=16",
]
"""Overrides for a run of seconds: 2 batches of 32 generated images, a 64-unit model."""


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> dict:
    """Offline, with a private data and W&B directory and one-line errors; the environment for
    subprocesses too."""
    monkeypatch.setenv("INTVAE_OFFLINE", "1")
    monkeypatch.setenv("INTVAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return dict(os.environ)


@pytest.fixture
def compose_train(app_env, tmp_path):
    """``compose_train(*overrides)``: the root config as ``python -m intvae.train`` sees it
    (Hydra's node set, output directory ``tmp_path/run``)."""

    def compose_with(*overrides: str, output_dir: Path | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir or tmp_path / "run")
            del cfg["hydra"]
        return cfg

    yield compose_with
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def reevaluate(*overrides: str) -> dict:
    """``intvae-evaluate <overrides>`` in this process: the ``evaluate`` config composed with
    ``overrides``, then ``intvae.app.evaluate.reevaluate``; returns the updated results."""
    from intvae.app.evaluate import reevaluate as run

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
            cfg = compose("evaluate", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    return run(cfg)


@pytest.fixture
def cli(app_env, tmp_path):
    """``cli(module, *args)``: run ``python -m <module> <args>`` in ``tmp_path``."""

    def run(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=app_env,
                              capture_output=True, text=True, timeout=timeout)

    return run
