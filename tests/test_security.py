"""Security: checkpoints are read with ``weights_only=True`` (a malicious pickle is refused and
its payload never runs), our own checkpoints need nothing more, no other unpickling of files,
downloads verified, and a run writes nothing outside its output directory and the data cache.
(The restricted unpickler of ``mnist.pkl.gz``: ``tests/test_data_formats.py::
test_restricted_unpickler_refuses_code_execution``; checksum mismatches:
``tests/test_data_fetch.py``.)"""

import os
import pickle
import re
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import REPO, TINY, reevaluate
from hydra.utils import instantiate

from intvae.app.build import build_vae
from intvae.app.errors import ConfigError
from intvae.app.module import VAEModule
from intvae.app.runs import read_checkpoint
from intvae.app.train import main, train
from intvae.data.registry import DATASETS


class Payload:
    """Unpickling this runs ``exec``: it writes the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')",)


@pytest.fixture
def malicious_checkpoint(tmp_path):
    """A checkpoint that looks like a Lightning one, with a payload in its hyperparameters."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0,
                "hyper_parameters": {"config": Payload(marker)}}, path)
    with pytest.raises(pickle.UnpicklingError):  # what a weights-only load does with it
        torch.load(path, weights_only=True)
    assert not marker.exists()
    return path, marker


def test_a_malicious_checkpoint_is_refused_and_never_runs(malicious_checkpoint, monkeypatch,
                                                          capsys, app_env, tmp_path):
    path, marker = malicious_checkpoint
    refused = (rf"{re.escape(str(path))} is invalid: it holds more than tensors and plain "
               r"containers \(it names (builtins\.)?exec\); it was refused unread and nothing "
               r"in it ran; do not load it otherwise")
    monkeypatch.setattr(sys, "argv", ["intvae.train", *TINY, f"ckpt_path={path}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: ckpt_path={refused}\n", err)
    assert "weights_only" not in err  # torch's advice to reload unsafely is not passed on
    with pytest.raises(ConfigError, match=f"run={refused}"):
        reevaluate(f"run={path}", "compile=false")
    with pytest.raises(ConfigError, match=f"run={refused}"):
        reevaluate(f"run={path.parent.parent}", "checkpoint=last", "compile=false")  # the dir
    assert not marker.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # nothing written


def test_lightning_also_loads_weights_only(malicious_checkpoint, compose_train):
    """Behind the app's own check, ``Trainer.fit(..., weights_only=True)`` refuses it too."""
    path, marker = malicious_checkpoint
    cfg = compose_train(*TINY)
    datamodule = instantiate(cfg.data)
    module = VAEModule(build_vae(cfg, datamodule.num_pixels), instantiate(cfg.bound),
                       instantiate(cfg.optimizer))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=cfg.paths.output_dir)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=path, weights_only=True)
    assert not marker.exists()


def plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool, torch.Tensor))


def test_our_checkpoints_load_weights_only(compose_train, tmp_path):
    train(compose_train(*TINY, "evaluate.enabled=false"))
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert plain(checkpoint["hyper_parameters"]) and plain(checkpoint["callbacks"])
        assert checkpoint["callbacks"]["EpochSeeds"] == {"seed": 0}
        assert read_checkpoint(ckpt)["hyper_parameters"]["config"]["model"]["hidden"] == [64]


def test_files_are_unpickled_only_through_the_guarded_paths():
    """``torch.load`` only in ``intvae/app/runs.py`` (weights-only), pickle only through
    the restricted unpickler of ``intvae/data/formats.py``, numpy never with pickles."""
    allowed = {"torch.load(": {"intvae/app/runs.py"},
               "pickle.load": set(), "pickle.Unpickler": {"intvae/data/formats.py"},
               "allow_pickle=True": set(), "weights_only=False": set()}
    found = {call: set() for call in allowed}
    for path in (REPO / "intvae").rglob("*.py"):
        text = path.read_text()
        for call in allowed:
            if call in text:
                found[call].add(str(path.relative_to(REPO)))
    assert found == allowed
    assert "torch.load(path, map_location=\"cpu\", weights_only=True)" in (
        REPO / "intvae" / "app" / "runs.py").read_text()


def test_every_download_is_verified_by_a_digest_or_documented():
    """Files fetched from the network have a published sha256 or md5; the two without one
    (checked by structure, their sha256 recorded) are the ones docs/configuration.md names."""
    unverified = {(name, raw.name) for name, spec in DATASETS.items()
                  for source in spec.sources if source.network
                  for raw in source.files if not raw.checksums}
    assert unverified == {("omniglot", "chardata.mat"), ("frey", "frey_rawface.mat")}
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert "`chardata.mat`" in doc and "`frey_rawface.mat`" in doc


TOOL_CACHE_VARIABLES = ("MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
                        "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_DIR",
                        "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


def test_a_run_writes_only_into_its_output_directory_and_the_data_cache(app_env, tmp_path):
    """HOME, TMPDIR and the working directory in a fresh folder, W&B offline, figures and the
    evaluation on: after the run, every file in that folder lies in the output directory or
    the data cache; the working directory stays empty (no lightning_logs, no outputs)."""
    home, tmp, cwd = tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"
    for folder in (home, tmp, cwd):
        folder.mkdir()
    env = {k: v for k, v in app_env.items() if k not in TOOL_CACHE_VARIABLES}
    env.update(HOME=str(home), TMPDIR=str(tmp), WANDB_MODE="offline",
               INTVAE_DATA_DIR=str(tmp_path / "data"), PYTHONDONTWRITEBYTECODE="1")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "intvae.train", *TINY, "logger=wandb",
                           f"hydra.run.dir={out}"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.json").is_file() and list((out / "wandb").glob("offline-run-*"))
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.is_dir()}
    outside = {p for p in written if p.parts[0] not in ("out", "data")}
    assert outside == set(), sorted(outside)
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert {p.parts[1] for p in written if p.parts[0] == "data"} <= {
        "matplotlib", "torchinductor", "triton", "wandb"}  # the tools' caches, nothing else
    assert os.path.isdir(tmp_path / "data" / "matplotlib")


def probe_payloads(tmp_path) -> dict:
    """Config nodes that name a callable other than intvae's classes (the probe of issue 16):
    name -> (node, file it would create or change)."""
    victim, saved, loaded = tmp_path / "victim.txt", tmp_path / "saved.npy", tmp_path / "evil.pt"
    victim.write_text("keep me")
    torch.save(Payload(tmp_path / "PAYLOAD_RAN"), loaded)  # runs exec when fully unpickled
    return {
        "open": {"_target_": "builtins.open", "_args_": [str(victim), "w"]},
        "numpy.save": {"_target_": "numpy.save", "file": str(saved), "arr": [1.0]},
        "torch.load": {"_target_": "torch.load", "f": str(loaded), "weights_only": False},
        "nested": {"_target_": "intvae.intervals.Fixed",
                   "delta": {"_target_": "builtins.open", "_args_": [str(victim), "w"]}},
        "args": {"_target_": "intvae.intervals.Fixed", "_args_": [0.1]},
        "interpolation": {"_target_": "intvae.intervals.Fixed", "delta": "${oc.env:HOME}"},
    }


def untouched(tmp_path) -> bool:
    return ((tmp_path / "victim.txt").read_text() == "keep me"
            and not (tmp_path / "saved.npy").exists()
            and not (tmp_path / "PAYLOAD_RAN").exists())


@pytest.mark.parametrize("group", ["data", "interval", "model", "likelihood"])
def test_a_checkpoint_cannot_name_code_to_run(compose_train, tmp_path, group, caplog):
    """Every probe payload in every instantiated group: ``intvae.evaluate`` refuses it in one
    line naming the key, the report skips the run with one warning, and nothing is written."""
    train(compose_train(*TINY, "evaluate.enabled=false", "callbacks.figures.every_n_epochs=9"))
    good = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    for name, node in probe_payloads(tmp_path).items():
        evil = tmp_path / f"evil-{group}-{name}"
        (evil / "checkpoints").mkdir(parents=True)
        good["hyper_parameters"]["config"][group] = node
        torch.save(good, evil / "checkpoints" / "last.ckpt")
        (evil / "results.json").write_text((tmp_path / "run" / "results.json").read_text())
        key = group if name not in ("nested", "interpolation") else f"{group}.delta"
        with pytest.raises(ConfigError) as refused:
            reevaluate(f"run={evil}", "checkpoint=last", "compile=false")
        message = str(refused.value)
        assert "\n" not in message and f"{key}" in message and "nothing was run" in message
        caplog.clear()
        from intvae.report import decode_runs, load_runs

        assert decode_runs(load_runs([evil])).reconstructions == {}
        assert "nothing was run" in caplog.text
        assert untouched(tmp_path), name
        assert sorted(p.name for p in evil.rglob("*")) == ["checkpoints", "last.ckpt",
                                                           "results.json"]
