"""Data-parallel training of one run (``trainer=ddp``) on the CPU: two processes over gloo,
through the real command line (Lightning's DDP launcher starts the second rank by running the
same ``python -m intvae.train ...`` again), and DDP inside a multirun, refused unless Slurm
starts the ranks."""

import csv
import json
import math

import lightning as L
import pytest
import torch
from conftest import TINY
from hydra.utils import instantiate
from omegaconf import OmegaConf

from intvae.app.config import check_no_ddp_in_multirun
from intvae.app.errors import ConfigError
from intvae.app.module import VAEModule
from intvae.app.runs import load_checkpoint, load_vae
from intvae.bounds import IELBO

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def last_val_row(run) -> dict:
    with open(run / "metrics.csv") as table:
        rows = [row for row in csv.DictReader(table) if row.get("val/kl")]
    return {k: float(v) for k, v in rows[-1].items() if v}


def validate_on_one_process(ckpt, samples: int):
    """``trainer.validate`` of the checkpoint's weights with one process: (val/bound, val/kl),
    and the standard error of val/bound's Monte Carlo estimate with ``samples`` samples of z
    per image (estimated from 64 single-sample draws per image)."""
    checkpoint, config = load_checkpoint(ckpt)
    cfg = OmegaConf.create(config)
    datamodule = instantiate(cfg.data)
    vae = load_vae(checkpoint, cfg, datamodule.num_pixels)
    module = VAEModule(vae, instantiate(cfg.bound), instantiate(cfg.optimizer))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, inference_mode=False)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    datamodule.setup("validate")
    x = torch.cat(list(datamodule.whole_split("val")))
    one_sample = IELBO(instantiate(cfg.interval), samples=1)
    with torch.no_grad():
        draws = torch.stack([one_sample(vae, x).reconstruction for _ in range(64)])
    standard_error = math.sqrt(draws.var(0).mean().item() / (samples * len(x)))
    return metrics["val/bound"], metrics["val/kl"], standard_error


def test_a_ddp_run_on_two_cpu_processes(cli, tmp_path):
    """The run completes; each rank trains on its own half (64 images: one batch of 32 per rank,
    one step per epoch with the gradients averaged); the final evaluation runs once, on rank 0,
    over the whole test split (32 images, not a rank's 16).

    Validation of the same weights (``last.ckpt`` holds the weights the run validated last)
    with one process: ``val/kl`` (closed form, no sampling) agrees to float32 rounding (rel
    1e-5), which holds only if the two ranks' shards cover every validation image exactly once
    and the metric states are summed over the ranks; ``val/bound`` differs by the Monte Carlo
    noise of its samples of z (each rank draws its own), so it must agree within 6 standard
    errors of the difference of two independent estimates, 6 * sqrt(2) * SE (SE about 0.4 nats
    here; a duplicated or dropped shard moves val/kl by far more than its tolerance)."""
    run = tmp_path / "ddp"
    done = cli("intvae.train", *DDP, *TINY, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and results["non_finite_steps"] == 0
    assert (results["epochs"], results["steps"]) == (1, 1)
    assert results["eval_images"] == 32 and math.isfinite(results["test_log_likelihood"])
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1: the same command, same dir
    assert {p.name for p in tmp_path.iterdir()} <= {"data", "ddp"}  # no lightning_logs, outputs
    ddp = last_val_row(run)
    assert results["val_bound"] == pytest.approx(ddp["val/bound"])
    bound, kl, standard_error = validate_on_one_process(run / "checkpoints" / "last.ckpt", 2)
    assert kl == pytest.approx(ddp["val/kl"], rel=1e-5)
    print(f"val/bound: {ddp['val/bound']:.3f} (2 ranks), {bound:.3f} (1 process), SE "
          f"{standard_error:.3f}; val/kl {ddp['val/kl']:.7g}, {kl:.7g}")
    assert abs(bound - ddp["val/bound"]) < 6 * math.sqrt(2) * standard_error, (
        bound, ddp["val/bound"], standard_error)


def test_the_ddp_trainer_config(compose_train):
    cfg = compose_train("trainer=ddp")
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", 2)
    assert cfg.trainer.enable_progress_bar is False  # rank-0-only metric syncs: see ddp.yaml


def test_ddp_inside_a_multirun_only_where_slurm_starts_the_ranks(monkeypatch):
    monkeypatch.setattr("intvae.app.config.in_multirun", lambda: True)
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    expected = (r"trainer.devices=2 is invalid with -m/--multirun: DDP relaunches the command "
                r"per rank and would rerun the whole sweep; instead sweep with one GPU per job "
                r"\(trainer=gpu hydra/launcher=joblib_gpus\), run each DDP run without -m "
                r"\(trainer=ddp trainer.devices=2\), or on Slurm let srun start the ranks "
                r"\(hydra/launcher=slurm hydra.launcher.tasks_per_node=2 "
                r"hydra.launcher.gpus_per_node=2\)")
    with pytest.raises(ConfigError, match=expected):
        check_no_ddp_in_multirun(2)
    check_no_ddp_in_multirun(1)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # srun started one task per device
    check_no_ddp_in_multirun(2)
    check_no_ddp_in_multirun("0,1")
    with pytest.raises(ConfigError, match="trainer.devices=4 is invalid with -m"):
        check_no_ddp_in_multirun(4)  # 2 tasks for 4 devices: Lightning would relaunch
    with pytest.raises(ConfigError, match="trainer.devices=2 is invalid with -m"):
        check_no_ddp_in_multirun(2, num_nodes=2)  # 2 nodes x 2 devices need 4 tasks
    monkeypatch.setenv("SLURM_NTASKS", "4")
    check_no_ddp_in_multirun(2, num_nodes=2)
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # salloc + python: no srun ranks
    with pytest.raises(ConfigError, match="trainer.devices=2 is invalid with -m"):
        check_no_ddp_in_multirun(2)
