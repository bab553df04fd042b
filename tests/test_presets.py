"""The experiment presets (``conf/experiment/``) are diffs: each extends the preset it varies (its
first defaults entry) or the root config, and states only what differs from it; ``budget=short``
chooses the CPU trainer in the defaults list; the paper's presets compose to the paper's values."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from intvae.app.config import CONF_DIR

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
MISSING = object()


@pytest.fixture
def compose_root():
    """``compose_root(*overrides)``: the root config with Hydra's node (``cfg.hydra``)."""

    def compose_with(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)

    yield compose_with
    GlobalHydra.instance().clear()


def split_defaults(preset: DictConfig) -> tuple[str | None, dict[str, str]]:
    """The parent preset (a first defaults entry naming another preset, else None) and the
    ``override /group: choice`` entries of a preset, as {group: choice}."""
    parent, overrides = None, {}
    for i, entry in enumerate(preset.get("defaults", [])):
        if isinstance(entry, str):
            assert i == 0, f"only the first defaults entry may name a parent preset: {entry!r}"
            parent = entry
            continue
        ((key, choice),) = entry.items()
        assert key.startswith("override /"), f"a defaults entry other than an override: {key}"
        overrides[key.removeprefix("override /")] = choice
    return parent, overrides


def leaves(node, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of the leaves of a raw (unresolved) config node; a list is a leaf."""
    if isinstance(node, DictConfig):
        out = {}
        for key in node:
            value = node._get_node(key)
            if isinstance(value, DictConfig):
                out.update(leaves(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = raw(value)
        return out
    return {prefix.rstrip("."): raw(node)}


def raw(node):
    """The value of a node without resolving interpolations (a list as a plain list)."""
    if isinstance(node, ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node._value() if hasattr(node, "_value") else node


def lookup(cfg: DictConfig, key: str):
    """The raw value at a dotted key of a composed config, MISSING if absent."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return MISSING
        node = node._get_node(part)
    return raw(node)


def restated(preset_name: str, compose_root) -> list[str]:
    """What the preset states that its base already gives: the base is its parent preset (or the
    root config without the default experiment, which any chosen preset replaces) with the
    preset's own group choices applied, i.e. its defaults list alone."""
    preset = OmegaConf.load(CONF_DIR / "experiment" / f"{preset_name}.yaml")
    parent, overrides = split_defaults(preset)
    parent_overrides = [f"experiment={parent}"] if parent else ["~experiment"]
    parent_cfg = compose_root(*parent_overrides)
    problems = [f"override /{group}: {choice} is already the choice of "
                f"{parent or 'the root config'}"
                for group, choice in overrides.items()
                if parent_cfg.hydra.runtime.choices.get(group) == choice]
    base = compose_root(*parent_overrides, *(f"{g}={c}" for g, c in overrides.items()))
    body = OmegaConf.masked_copy(preset, [k for k in preset if k != "defaults"])
    for key, value in leaves(body).items():
        if lookup(base, key) == value:
            problems.append(f"{key}: {value!r} is already given by "
                            f"{parent or 'the root config'}")
    return problems


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_states_only_what_differs_from_its_parent(name, compose_root):
    assert restated(name, compose_root) == []


@pytest.mark.parametrize("text, expected", [
    ("trainer:\n  gradient_clip_val: 3.0\n", "trainer.gradient_clip_val: 3.0 is already given"),
    ("delta: 0.01\n", "delta: 0.01 is already given"),
    ("data:\n  batch_size: 100\n", "data.batch_size: 100 is already given"),
    ("defaults:\n  - override /likelihood: gaussian\n",
     "override /likelihood: gaussian is already the choice of the root config"),
    ("defaults:\n  - paper_ielbo_mnist\n  - override /trainer: gpu\n",
     "override /trainer: gpu is already the choice of paper_ielbo_mnist"),
    ("defaults:\n  - paper_ielbo_mnist\n\noptimizer:\n  lr: 1e-4\n",
     "optimizer.lr: 0.0001 is already given by paper_ielbo_mnist"),
    # A value the preset's own group choice already gives (noise/gaussian.yaml: std 0.01).
    ("defaults:\n  - paper_elbo_mnist\n  - override /noise: gaussian\n\nnoise:\n  std: 0.01\n",
     "noise.std: 0.01 is already given by paper_elbo_mnist"),
])
def test_a_restated_default_is_caught(text, expected, compose_root, monkeypatch, tmp_path):
    """The check of the test above fails on a preset that restates a default."""
    conf = tmp_path / "conf"
    conf.mkdir()
    for path in CONF_DIR.rglob("*.yaml"):
        target = conf / path.relative_to(CONF_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (conf / "experiment" / "restating.yaml").write_text("# @package _global_\n" + text)
    monkeypatch.setitem(globals(), "CONF_DIR", conf)
    problems = restated("restating", compose_root)
    assert any(p.startswith(expected) for p in problems), problems


def test_the_short_budget_chooses_the_cpu_trainer(compose_root):
    cfg = compose_root("experiment=paper_ielbo_mnist", "budget=short")
    assert cfg.hydra.runtime.choices.trainer == "cpu"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.trainer.max_epochs == 10 and cfg.evaluate.samples == 100
    assert cfg.optimizer.lr == 1e-4  # the rest of the preset stays
    assert compose_root("experiment=paper_ielbo_mnist").hydra.runtime.choices.trainer == "gpu"


PAPER_IELBO = {
    "delta": 0.01, "samples": 10, "eps": 0.001, "optimizer.lr": 1e-4,
    "trainer.max_epochs": 1000, "trainer.gradient_clip_val": 3.0,
    "trainer.gradient_clip_algorithm": "norm", "trainer.accelerator": "gpu",
    "data.batch_size": 100, "evaluate.samples": 5000,
    "bound._target_": "intvae.bounds.IELBO", "bound.normalized": False, "bound.tolerance": 0.0,
    "likelihood._target_": "intvae.likelihoods.GaussianHead", "likelihood.sigma_min": 0.0,
    "likelihood.var_min": 0.0, "model.hidden": [200, 200], "model.latent": 25,
    "model.activation": "elu", "model.bias_init": 0.1, "noise": {},
}
"""The paper's IELBO settings (experiment=paper_ielbo_mnist's comment, references.md): the
presets inherit most of them from the root config, so a changed default must not move them."""


@pytest.mark.parametrize("name, data, changes", [
    ("paper_ielbo_mnist", "mnist", {}),
    ("paper_ielbo_omniglot", "omniglot", {}),
    ("paper_ielbo_frey", "frey", {}),
    ("paper_elbo_mnist", "mnist", {"bound._target_": "intvae.bounds.ELBO"}),
    ("paper_elbo_omniglot", "omniglot", {"bound._target_": "intvae.bounds.ELBO"}),
    ("paper_irelbo_mnist", "mnist", {
        "bound._target_": "intvae.bounds.IRELBO", "alpha": 2.0, "samples": 1,
        "model.hidden": [200], "model.activation": "relu", "model.bias_init": 0.0}),
])
def test_the_paper_presets_have_the_paper_settings(name, data, changes, compose_root):
    cfg = compose_root(f"experiment={name}")
    expected = {**PAPER_IELBO, "data.name": data, **changes}
    if expected["bound._target_"] != "intvae.bounds.IELBO":
        del expected["bound.normalized"], expected["bound.tolerance"]
    got = {key: OmegaConf.select(cfg, key) for key in expected}
    got = {k: OmegaConf.to_container(v) if isinstance(v, (DictConfig, ListConfig)) else v
           for k, v in got.items()}
    assert got == expected
    assert cfg.hydra.runtime.choices.interval == "fixed"
