"""Noise on the training data: the "noise in the data" fixes the integral bounds paper argues
against (section 1: the density ELBO trains on high-contrast images only "unless noise is
added ... to the dataset during training").

A noise is applied to each training batch afresh, after the batch reaches the device; validation,
test and the log-likelihood evaluation see the clean data. Config group ``noise``:
``none`` (the default), ``uniform`` (dequantization) and ``gaussian``.
"""

import torch

from intvae.checks import finite_float, integer, require


class UniformDequantization:
    """x + (u - 1/2) * width with u ~ U(0, 1) per pixel: each pixel spread uniformly over the
    quantization bin centred on it, width = (1 - 2 eps) / (levels - 1) for data of ``levels``
    levels rescaled to [eps, 1 - eps] (``intvae.data.preprocessing``); the dequantization of
    Theis, van den Oord and Bethge (2016)."""

    def __init__(self, levels: int = 256, eps: float = 1e-3):
        integer("noise.levels", levels, 2)
        require("noise.eps", eps, 0 <= finite_float("noise.eps", eps) < 0.5, "in [0, 0.5)")
        self.width = (1.0 - 2.0 * eps) / (levels - 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + (torch.rand_like(x) - 0.5) * self.width


class GaussianNoise:
    """x + std * n with n ~ N(0, 1) per pixel."""

    def __init__(self, std: float):
        require("noise.std", std, finite_float("noise.std", std) > 0, "a finite number > 0")
        self.std = float(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * self.std
