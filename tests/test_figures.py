"""``figures.tile``: the image grid of the figures, against grids built by hand."""

import numpy as np
import torch

from intvae.report.figures import tile


def numbered_images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """``n`` images whose pixels count up from 0 in steps of 1/64, image after image."""
    size = int(np.prod(shape))
    return (np.arange(n * size, dtype=np.float32) / 64).reshape(n, *shape)


def test_tile_lays_out_grey_images_row_by_row_with_white_lines_between():
    images = numbered_images(5, (2, 3))
    white_column, white_row = np.ones((2, 1)), np.ones((1, 7))
    blank = np.ones((2, 3))
    rows = [np.hstack([left, white_column, right])
            for left, right in ((images[0], images[1]), (images[2], images[3]),
                                (images[4], blank))]
    expected = np.vstack([rows[0], white_row, rows[1], white_row, rows[2]])
    grid = tile(torch.from_numpy(images).reshape(5, 6), (1, 2, 3), columns=2)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1) == expected.shape
    assert grid.dtype == np.float32
    np.testing.assert_array_equal(grid, expected)


def test_tile_keeps_the_channels_last_and_clamps_to_the_unit_interval():
    images = numbered_images(3, (3, 2, 2)) * 4 - 1  # channels first, values from -1 to 1.19
    grid = tile(torch.from_numpy(images).reshape(3, 12), (3, 2, 2), columns=3)
    assert grid.shape == (2, 3 * 2 + 2, 3)
    clamped = np.clip(images, 0, 1).transpose(0, 2, 3, 1)  # (N, H, W, C)
    for i in range(3):
        np.testing.assert_array_equal(grid[:, 3 * i: 3 * i + 2], clamped[i])
    np.testing.assert_array_equal(grid[:, [2, 5]], np.ones((2, 2, 3)))


def test_tile_of_one_image_is_the_image():
    image = numbered_images(1, (4, 5))
    grid = tile(torch.from_numpy(image).reshape(1, 20), (1, 4, 5), columns=1)
    np.testing.assert_array_equal(grid, image[0])


def test_tile_fills_the_missing_columns_of_a_short_row_with_white():
    images = numbered_images(2, (2, 2))
    grid = tile(torch.from_numpy(images).reshape(2, 4), (1, 2, 2), columns=4)
    assert grid.shape == (2, 4 * 2 + 3)
    np.testing.assert_array_equal(grid[:, :2], images[0])
    np.testing.assert_array_equal(grid[:, 3:5], images[1])
    np.testing.assert_array_equal(grid[:, 5:], np.ones((2, 6)))
