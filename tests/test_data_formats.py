"""Readers of the raw formats and the per-dataset converters, on small synthetic files."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from data_fixtures import (
    column_major_columns,
    forbid_network,
    random_levels,
    write_chardata,
    write_frey,
    write_idx_images,
    write_mnist_pkl,
)

from intvae.data.errors import DataError
from intvae.data.formats import (
    expect_shape,
    levels_from_multiples,
    quantize_unit_interval,
    read_idx_images,
    read_mat,
    read_mnist_pkl_images,
)
from intvae.data.registry import frey_rawface, mnist_pkl, omniglot_chardata


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path / "data-dir")


def test_idx_round_trip(tmp_path):
    images = random_levels(7)
    path = write_idx_images(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(read_idx_images(path), images)


def test_idx_wrong_magic_names_file_and_magic(tmp_path):
    path = write_idx_images(tmp_path / "labels.gz", random_levels(3), magic=0x00000801)
    with pytest.raises(DataError, match=r"labels\.gz.*magic number 0x00000801.*0x00000803"):
        read_idx_images(path)


def test_idx_truncated_gzip(tmp_path):
    path = write_idx_images(tmp_path / "x.gz", random_levels(50))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"x\.gz.*truncated or corrupt"):
        read_idx_images(path)


def test_idx_payload_shorter_than_header_says(tmp_path):
    header = struct.pack(">IIII", 0x803, 10, 28, 28)
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(header + bytes(28 * 28 * 9)))
    with pytest.raises(DataError, match=r"expected 7856 for 10 images of 28x28"):
        read_idx_images(path)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="not a complete gzip file"):
        read_idx_images(path)


def test_mnist_pkl_gives_exact_levels(tmp_path):
    splits = [random_levels(5, seed=s) for s in range(3)]
    path = write_mnist_pkl(tmp_path / "mnist.pkl.gz", splits)
    converted = mnist_pkl({"mnist.pkl.gz": path})
    assert list(converted) == ["train", "val", "test"]
    for got, want in zip(converted.values(), splits, strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_mnist_pkl_rejects_values_off_the_256_grid(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    bad = np.full((2, 784), 0.3, dtype=np.float32)
    good = (np.zeros((2, 784)) / 256).astype(np.float32)
    content = ((bad, np.zeros(2)), (good, np.zeros(2)), (good, np.zeros(2)))
    path.write_bytes(gzip.compress(pickle.dumps(content, protocol=4)))
    with pytest.raises(DataError, match=r"train images.*not multiples of 1/256"):
        mnist_pkl({"mnist.pkl.gz": path})


def test_mnist_pkl_truncated(tmp_path):
    path = write_mnist_pkl(tmp_path / "mnist.pkl.gz", [random_levels(5)] * 3)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match=r"mnist\.pkl\.gz.*not a readable pickle"):
        read_mnist_pkl_images(path)


def test_mnist_pkl_wrong_layout(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps([np.zeros(3)], protocol=4)))
    with pytest.raises(DataError, match="expected a tuple"):
        read_mnist_pkl_images(path)


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("make_payload", [_RunsCommand, _Evaluates])
def test_restricted_unpickler_refuses_code_execution(tmp_path, make_payload):
    marker = tmp_path / "pwned"
    if make_payload is _RunsCommand:
        payload = make_payload(f"touch {marker}")
    else:
        payload = make_payload(f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((payload, None),) * 3, protocol=4)))
    with pytest.raises(DataError, match="refusing to load global"):
        read_mnist_pkl_images(path)
    assert not marker.exists()


def test_chardata_layout_matches_the_iwae_code(tmp_path):
    train, test = random_levels(30, seed=3), random_levels(6, seed=4)
    path = write_chardata(tmp_path / "chardata.mat", train, test)
    splits = omniglot_chardata({"chardata.mat": path}, n_val=5)
    assert {k: v.shape for k, v in splits.items()} == {
        "train": (25, 28, 28),
        "val": (5, 28, 28),
        "test": (6, 28, 28),
    }
    np.testing.assert_array_equal(splits["test"], test)
    permutation = np.random.RandomState(123).permutation(30)
    np.testing.assert_array_equal(splits["train"], train[permutation[:25]])
    np.testing.assert_array_equal(splits["val"], train[permutation[25:]])
    # The IWAE code's vectors: data.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F").
    data = column_major_columns(test)
    iwae = data.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F")
    np.testing.assert_array_equal(splits["test"].reshape(len(test), -1), iwae)


def test_chardata_values_outside_unit_interval(tmp_path):
    import scipy.io

    path = tmp_path / "chardata.mat"
    scipy.io.savemat(path, {"data": np.full((784, 3), 1.5), "testdata": np.zeros((784, 2))})
    with pytest.raises(DataError, match=r"\(data\).*within \[0, 1\]"):
        omniglot_chardata({"chardata.mat": path}, n_val=1)


def test_chardata_wrong_shape(tmp_path):
    import scipy.io

    path = tmp_path / "chardata.mat"
    scipy.io.savemat(path, {"data": np.zeros((100, 3)), "testdata": np.zeros((784, 2))})
    with pytest.raises(DataError, match=r"shape \(100, 3\), expected \(784, N\)"):
        omniglot_chardata({"chardata.mat": path}, n_val=1)


def test_frey_layout_and_split(tmp_path):
    faces = random_levels(20, shape=(28, 20), seed=5)
    path = write_frey(tmp_path / "frey_rawface.mat", faces)
    splits = frey_rawface({"frey_rawface.mat": path}, n_val=3, n_test=4)
    shuffled = faces[np.random.RandomState(0).permutation(20)]
    np.testing.assert_array_equal(splits["train"], shuffled[:13])
    np.testing.assert_array_equal(splits["val"], shuffled[13:16])
    np.testing.assert_array_equal(splits["test"], shuffled[16:])


def test_frey_must_be_uint8(tmp_path):
    import scipy.io

    path = tmp_path / "frey_rawface.mat"
    scipy.io.savemat(path, {"ff": np.zeros((560, 4))})
    with pytest.raises(DataError, match="dtype float64, expected uint8"):
        frey_rawface({"frey_rawface.mat": path}, n_val=1, n_test=1)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_mat_file(tmp_path, damage):
    path = write_frey(tmp_path / "frey_rawface.mat", random_levels(10, shape=(28, 20)))
    raw = path.read_bytes()
    path.write_bytes(b"garbage" * 50 if damage == "garbage" else raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"frey_rawface\.mat: not a readable MATLAB file"):
        read_mat(path, ("ff",))


def test_mat_missing_variable(tmp_path):
    path = write_frey(tmp_path / "frey_rawface.mat", random_levels(2, shape=(28, 20)))
    with pytest.raises(DataError, match=r"missing variable\(s\) \['data'\]"):
        read_mat(path, ("data",))


def test_level_conversions_check_their_range():
    with pytest.raises(DataError, match=r"levels range over \[0, 256\]"):
        levels_from_multiples(np.array([[0.0, 1.0]]), 256, "x")
    with pytest.raises(DataError, match="finite"):
        quantize_unit_interval(np.array([[np.nan]]), "x")
    np.testing.assert_array_equal(
        quantize_unit_interval(np.array([[0.0, 0.5, 1.0]]), "x"), [[0, 128, 255]]
    )


def test_expect_shape_message():
    expect_shape(np.zeros((3, 4)), (None, 4), "ok")
    with pytest.raises(DataError, match=r"where: array of shape \(3, 4\), expected \(N, 5\)"):
        expect_shape(np.zeros((3, 4)), (None, 5), "where")
