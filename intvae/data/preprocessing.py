"""From 8-bit levels to the values a model sees.

A pixel of level ``k`` in ``{0, ..., L - 1}`` is served as ``x = eps + (1 - 2 eps) k / (L - 1)``:

* 8-bit sets: ``L = 256`` and ``eps`` from the config (the paper rescales [0, 1] to
  [eps, 1 - eps] so that logit-space likelihoods stay finite);
* binarized sets: ``L = 2`` and ``eps = 0``; a pixel is 1 with probability ``level / 255``, drawn
  afresh each training epoch and once, with a fixed seed, for validation and test.
"""

import torch

from intvae.data.batching import derive_seed

BINARIZE_STREAM = 1
"""Stream number of the per-epoch training binarization in ``derive_seed``."""

EVAL_BINARIZE_STREAM = 2
"""Stream number of the fixed validation and test binarization in ``derive_seed``."""


def scale_levels(levels: torch.Tensor, eps: float, max_level: int = 255) -> torch.Tensor:
    """float32 ``eps + (1 - 2 eps) * levels / max_level``, on ``levels``' device."""
    return levels.to(torch.float32, copy=True).mul_((1.0 - 2.0 * eps) / max_level).add_(eps)


def bernoulli_levels(levels: torch.Tensor, seed: int, max_level: int = 255) -> torch.Tensor:
    """Binarize levels: 1 with probability ``level / max_level``, as float32 0/1.

    The uniform draws come from a generator on ``levels``' device seeded with ``seed``, so the
    result is reproducible on one device type (CPU and CUDA generators differ).
    """
    generator = torch.Generator(device=levels.device).manual_seed(seed)
    uniform = torch.rand(levels.shape, generator=generator, device=levels.device)
    return (uniform * max_level < levels).to(torch.float32)


def eval_binarization(levels: torch.Tensor, seed: int, split_index: int) -> torch.Tensor:
    """The fixed binarization of an evaluation split, drawn on the CPU.

    Drawn on the CPU so that validation and test images are the same on every device;
    ``split_index`` keeps the draws of different splits independent.
    """
    return bernoulli_levels(levels.cpu(), derive_seed(seed, EVAL_BINARIZE_STREAM, split_index))


class DynamicBinarization:
    """``EpochData`` for ``IndexBatches``: a fresh Bernoulli draw of the images each epoch.

    The draw of epoch ``e`` is seeded by ``derive_seed(seed, e, BINARIZE_STREAM)`` and made on
    the device holding ``levels``; the last draw is kept, so passes over one epoch agree.
    """

    def __init__(self, levels: torch.Tensor, seed: int) -> None:
        self.levels = levels
        self.seed = seed
        self._last: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.levels)

    def for_epoch(self, epoch: int) -> torch.Tensor:
        if self._last is None or self._last[0] != epoch:
            seed = derive_seed(self.seed, epoch, BINARIZE_STREAM)
            self._last = (epoch, bernoulli_levels(self.levels, seed))
        return self._last[1]
