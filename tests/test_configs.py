"""Every option of every config group composes with the root config and instantiates; the
resolvers and helpers of ``intvae.config``."""


import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from intvae.app.build import build_vae
from intvae.app.config import CONF_DIR, requested_devices, run_dir
from intvae.app.errors import ConfigError, describe
from intvae.app.train import instantiate_all
from intvae.app.wandb_names import sweep_name
from intvae.data import ImageDataModule
from intvae.networks import VAE

GROUPS = ("bound", "interval", "likelihood", "model", "data", "trainer", "logger", "callbacks",
          "experiment", "debug", "noise", "budget")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_is_composed_below():
    """Every config group folder is in GROUPS, so that each of its options is composed and
    instantiated by the next test."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert groups == {*GROUPS, "hydra"}


def test_the_default_config(compose_train):
    """The study's recommendation (conf/experiment/recommended.yaml): the IRELBO at alpha 0.5,
    one sample, lr 1e-4, 40 epochs on the CPU."""
    cfg = compose_train()
    assert (cfg.delta, cfg.alpha, cfg.samples, cfg.eps, cfg.seed) == (0.01, 0.5, None, 0.001, 0)
    assert cfg.bound.samples == 1  # the IRELBO's own K
    assert cfg.bound._target_ == "intvae.bounds.IRELBO" and cfg.data.name == "mnist"
    assert cfg.optimizer.lr == 1e-4 and cfg.trainer.max_epochs == 40
    assert cfg.model.hidden == [200, 200] and cfg.model.activation == "elu"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.gradient_clip_val == 3.0
    assert cfg.evaluate.samples == "auto" and set(cfg.logger) == {"csv"}
    for key in ("max_epochs", "max_steps", "limit_train_batches", "limit_val_batches",
                "limit_test_batches", "accelerator", "devices", "precision"):
        assert key in cfg.trainer  # plain keys: overridden without '+'


OWN_SAMPLES = {"elbo": 1, "ielbo": 1, "irelbo": 1, "iwae": 5, "iw_ielbo": 5, "miwae": 5, "vr": 5,
               "vr_max": 5}
"""Each bound's own K (``conf/bound/<name>.yaml``): more than one for the importance-weighted."""


@pytest.mark.parametrize("experiment", [[], ["experiment=smoke"], ["~experiment"]])
@pytest.mark.parametrize("bound", sorted(OWN_SAMPLES))
def test_each_bound_owns_its_samples(bound, experiment, compose_train):
    """The default experiment sets the IRELBO's one sample without touching other bounds:
    ``bound=<name>`` trains with that bound's own K (the default experiment's and the bare root
    alike); a root ``samples=N`` sets every bound's K, ``bound.samples=N`` this bound's."""
    if experiment == ["experiment=smoke"]:  # a preset that sets the shared samples: 2
        assert instantiate(compose_train(*experiment, f"bound={bound}").bound).samples == 2
        return
    cfg = compose_train(*experiment, f"bound={bound}")
    assert cfg.samples is None and instantiate(cfg.bound).samples == OWN_SAMPLES[bound]
    assert instantiate(compose_train(*experiment, f"bound={bound}", "samples=3").bound
                       ).samples == 3
    assert instantiate(compose_train(*experiment, f"bound={bound}", "bound.samples=7").bound
                       ).samples == 7


def test_the_composed_iwae_shows_its_own_samples(tmp_path):
    """``intvae-train bound=iwae --cfg job`` prints the IWAE's own K, not the default
    experiment's one sample of the IRELBO."""
    import subprocess
    import sys

    import yaml

    command = [sys.executable, "-m", "intvae.train", "bound=iwae", "--cfg", "job"]
    shown = [yaml.safe_load(subprocess.run(command + resolve, capture_output=True, text=True,
                                           cwd=tmp_path, timeout=300, check=True).stdout)
             for resolve in ([], ["--resolve"])]
    assert shown[0]["bound"]["samples"] == "${intvae.samples:5}"  # its own K, unless samples=N
    assert shown[1]["bound"]["_target_"] == "intvae.bounds.IWAE"
    assert shown[1]["bound"]["samples"] == 5 and shown[1]["samples"] is None


@pytest.mark.parametrize("group, option", CASES)
def test_every_option_composes_and_instantiates(group, option, compose_train, monkeypatch):
    overrides = [f"{group}={option}"]
    if (group, option) == ("interval", "bins"):
        overrides.append("bound=ielbo")  # the default IRELBO needs finite intervals
    if group in ("trainer", "experiment"):
        overrides.append("trainer.accelerator=cpu")  # the gpu choices, on a machine without one
    cfg = compose_train(*overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, ImageDataModule)
    assert isinstance(build_vae(cfg, datamodule.num_pixels), VAE)
    instantiate(cfg.bound)
    instantiate(cfg.interval)
    instantiate(cfg.optimizer)
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert isinstance(trainer, L.Trainer)
    if group == "logger":
        assert "csv" in cfg.logger and len(loggers) == len(cfg.logger)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "submitit_slurm",
                                      "joblib_gpus", "slurm"])
def test_hydra_launchers_compose_to_installed_launchers(launcher):
    """Each launcher the docs name composes with the root config, and its ``_target_`` imports
    as a Hydra ``Launcher`` (the plugin is installed and the name is right)."""
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"hydra/launcher={launcher}"],
                          return_hydra_config=True)
        assert issubclass(get_class(cfg.hydra.launcher._target_), Launcher)
    finally:
        GlobalHydra.instance().clear()


def test_wandb_logger_settings(compose_train):
    """Group: null in the config, set by the app from the run's record
    (``intvae.app.wandb_run.logger_settings``); name outside a sweep: the bound's; tags are the
    app's; id: the stored one, set by the app."""
    cfg = compose_train("logger=wandb", "bound=irelbo", "delta=0.005", "seed=3")
    OmegaConf.resolve(cfg)
    wandb = cfg.logger.wandb
    assert wandb.group is None and wandb.name == "irelbo"
    assert wandb.mode == "disabled"  # the test environment's WANDB_MODE
    assert wandb.save_dir == cfg.paths.output_dir and wandb.id is None


def test_sweep_name_is_the_sweep_directory_name(compose_train, tmp_path):
    sweep = tmp_path / "multirun" / "2030-01-01_10-00-00"
    compose_train("logger=wandb", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep}")
    assert sweep_name() == "2030-01-01_10-00-00"


def test_run_dir_of_a_checkpoint(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert run_dir(str(ckpt), "default") == str(tmp_path / "run")
    assert run_dir(str(tmp_path / "x.ckpt"), "default") == str(tmp_path)
    assert run_dir(None, "outputs/a") == "outputs/a"


@pytest.mark.parametrize("devices, count", [(1, 1), (4, 4), ("2", 2), ("0,1", 2), ("1,", 1),
                                            ([0, 3], 2), ("auto", 1), (-1, 1)])
def test_requested_devices(devices, count, monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert requested_devices(devices) == count


def test_describe_gives_one_line_naming_the_key(compose_train):
    cfg = compose_train("delta=0")
    with pytest.raises(Exception) as info:
        instantiate(cfg.bound)
    assert describe(info.value) == ("bound.interval: delta=0 is invalid: delta must be a finite "
                                    "number > 0")
    assert describe(ConfigError("a\nb")) == "a b"

