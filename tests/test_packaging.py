"""Packaging: the dependency bounds in pyproject.toml, the minimum versions CI installs
(``.ci/minimums.txt``), and the contents of the built wheel."""

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra's tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MINIMUMS = ROOT / ".ci" / "minimums.txt"
CONF = ROOT / "intvae" / "app" / "conf"
SCRIPTS = {"intvae-train", "intvae-evaluate", "intvae-report", "intvae-data"}

LOWER_BOUND = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)>=([0-9][0-9A-Za-z.!+-]*)")
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.!+-]*)")


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML`` == ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements() -> list[str]:
    """What a user's install needs: the dependencies and the ``launchers`` extra."""
    return [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["launchers"]]


def lower_bounds() -> dict[str, str]:
    """{name: lower bound} of the runtime requirements, each of which must be ``name>=version``
    and nothing else (no upper bound, no second specifier, no marker)."""
    bounds = {}
    for requirement in runtime_requirements():
        match = LOWER_BOUND.fullmatch(requirement.replace(" ", ""))
        assert match, f"{requirement!r}: a runtime dependency has one lower bound and no cap"
        name = normalized(match[1])
        assert name not in bounds, f"{name} is required twice"
        bounds[name] = match[2]
    return bounds


def pins() -> dict[str, str]:
    """{name: version} of the ``name==version`` lines of ``.ci/minimums.txt``."""
    pinned = {}
    for line in MINIMUMS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.fullmatch(line)
        assert match, f"{MINIMUMS.name}: {line!r} is not name==version"
        name = normalized(match[1])
        assert name not in pinned, f"{MINIMUMS.name}: {name} is pinned twice"
        pinned[name] = match[2]
    return pinned


def test_runtime_dependencies_have_a_lower_bound_and_no_cap():
    bounds = lower_bounds()
    assert {"torch", "torchvision", "lightning", "hydra-core", "torchmetrics"} <= set(bounds)


def test_minimums_pin_every_runtime_dependency_at_its_lower_bound():
    assert pins() == lower_bounds()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built by pip from a copy of the sources (an in-tree build would write build/
    and intvae.egg-info/ into the checkout), without build isolation: offline."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "intvae", source / "intvae",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(dist),
                            str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    [built] = dist.glob("intvae-*.whl")
    return built


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def dist_info_file(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [path] = [n for n in archive.namelist()
                  if re.fullmatch(rf"intvae-[^/]+\.dist-info/{name}", n)]
        return archive.read(path).decode()


def test_the_wheel_holds_every_config_file_and_module(wheel):
    names = wheel_names(wheel)
    configs = {p.relative_to(ROOT).as_posix() for p in CONF.rglob("*.yaml")}
    assert "intvae/app/conf/train.yaml" in configs and len(configs) > 20
    shipped = {n for n in names if n.startswith("intvae/app/conf/") and n.endswith(".yaml")}
    assert shipped == configs
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "intvae").rglob("*.py")}
    assert "intvae/app/conf/__init__.py" in modules  # pkg://intvae.app.conf is a package
    assert modules <= names, sorted(modules - names)
    assert all(n.startswith(("intvae/", "intvae-")) for n in names), sorted(names)


def test_the_wheel_declares_the_console_scripts(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.optionxform = str
    entry_points.read_string(dist_info_file(wheel, "entry_points.txt"))
    scripts = dict(entry_points["console_scripts"])
    assert set(scripts) == SCRIPTS
    assert scripts == PROJECT["scripts"]


def test_the_wheel_carries_the_mit_license(wheel):
    metadata = dist_info_file(wheel, "METADATA").splitlines()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert dist_info_file(wheel, "licenses/LICENSE") == (ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026 the intvae authors" in (ROOT / "LICENSE").read_text()
