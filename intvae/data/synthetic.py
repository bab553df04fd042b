"""Generated high-contrast images for tests, smoke runs and benchmarks (no download).

Each 28x28 image holds a few thick pen strokes (line segments; short ones look like blobs)
with a one-pixel anti-aliased edge, so almost every pixel is level 0 or 255, like MNIST.
"""

import numpy as np

SIZE = 28
STROKES = 3
_CHUNK = 1024  # images rendered at once (bounds the temporary arrays to about 20 MB)


def synthetic_images(n: int, seed: int | tuple[int, ...]) -> np.ndarray:
    """``n`` images as a uint8 array (n, 28, 28), a deterministic function of ``seed``."""
    rng = np.random.default_rng(seed)
    rows, cols = (g.reshape(-1).astype(np.float32) + 0.5 for g in np.mgrid[0:SIZE, 0:SIZE])
    out = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        a_r, a_c, b_r, b_c = rng.uniform(4.0, SIZE - 4.0, (4, m, STROKES, 1)).astype(np.float32)
        radius = rng.uniform(0.8, 2.0, (m, STROKES, 1)).astype(np.float32)
        ab_r, ab_c = b_r - a_r, b_c - a_c
        ap_r, ap_c = rows - a_r, cols - a_c  # (m, S, P)
        t = (ap_r * ab_r + ap_c * ab_c) / (ab_r * ab_r + ab_c * ab_c + 1e-6)
        np.clip(t, 0.0, 1.0, out=t)
        dist = np.hypot(ap_r - t * ab_r, ap_c - t * ab_c)  # distance to the segment
        ink = np.clip(radius - dist + 0.5, 0.0, 1.0).max(axis=1)  # (m, P)
        out[start : start + m] = np.rint(ink * 255.0).astype(np.uint8).reshape(m, SIZE, SIZE)
    return out


def synthetic_splits(sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Independent images for each split, e.g. ``{"train": 512, "val": 128, "test": 128}``."""
    return {
        split: synthetic_images(n, seed=(seed, i)) for i, (split, n) in enumerate(sizes.items())
    }
