"""The README's promises that a test can run: the library example (the IELBO as the loss of a
plain PyTorch VAE, without Lightning or Hydra), the console scripts and their tab completion."""

import math
import os
import re
import shutil
import subprocess

import torch
from conftest import REPO

README = (REPO / "README.md").read_text()


def library_example() -> str:
    """The python block after the ``<!-- library-example -->`` marker."""
    block = README.split("<!-- library-example -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_the_library_example_trains_a_plain_pytorch_vae():
    code = library_example()
    assert "lightning" not in code and "hydra" not in code
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    loss, vae = scope["loss"], scope["vae"]
    assert loss.ndim == 0 and math.isfinite(loss.item())
    # a bound is at most log P(I) <= 0 for every image: the loss (its negated mean) is >= 0
    assert loss.item() >= 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())


def test_the_console_scripts_and_their_tab_completion(tmp_path, app_env):
    """``intvae-train`` completes ``bound=ir`` to ``bound=irelbo`` (Hydra's bash completion,
    ``-sc query=bash``); every script answers ``--help``."""
    for script in ("intvae-train", "intvae-evaluate", "intvae-report", "intvae-data"):
        assert shutil.which(script), f"{script} is not installed"
        done = subprocess.run([script, "--help"], cwd=tmp_path, env=app_env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (script, done.stderr[-2000:])
    line = "intvae-train bound=ir"
    env = {**app_env, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    done = subprocess.run(["intvae-train", "-sc", "query=bash"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["bound=irelbo"], done.stderr[-2000:]
    assert "intvae-train" in subprocess.run(["intvae-train", "-sc", "install=bash"],
                                            cwd=tmp_path, env=env, capture_output=True,
                                            text=True, timeout=120).stdout


def test_evaluate_is_a_hydra_app(tmp_path, app_env):
    """``intvae-evaluate --cfg job`` prints its config, as ``intvae-train --cfg job`` does."""
    cwd = tmp_path / "cwd"  # (tmp_path also holds the data cache of app_env)
    cwd.mkdir()
    done = subprocess.run(["intvae-evaluate", "run=somewhere", "samples=7", "--cfg", "job"],
                          cwd=cwd, env=app_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "run: somewhere" in done.stdout and "samples: 7" in done.stdout
    assert os.listdir(cwd) == []  # --cfg writes nothing
