"""Building a run's objects from its config: the VAE with its likelihood head, and the choice
between compiled and eager interval kernels."""

import logging
from collections.abc import Callable

from hydra.utils import instantiate
from omegaconf import DictConfig

from intvae.app.errors import describe
from intvae.networks import VAE
from intvae.numerics import Kernels

log = logging.getLogger(__name__)


def build_vae(cfg: DictConfig, num_pixels: int) -> VAE:
    """The VAE of ``cfg.model`` with the likelihood head of ``cfg.likelihood``."""
    return instantiate(cfg.model, num_pixels=num_pixels, head=instantiate(cfg.likelihood))


def select_kernels(vae: VAE, compiled: bool, probe: Callable[[], object]) -> bool:
    """Run ``probe()`` (a small forward pass) with the eager interval kernels, letting its
    errors through; then, if ``compiled``, give the likelihood head the ``torch.compile``d
    kernels (``intvae.numerics.Kernels(compiled=True)``: 2 to 4 times faster on a CPU) and run
    it again, which compiles them. If that fails, fall back to the eager kernels with a
    warning. Returns whether the compiled kernels are in use."""
    vae.head.kernels = Kernels()
    probe()
    if not compiled:
        return False
    vae.head.kernels = Kernels(compiled=True)
    try:
        probe()
    except Exception as error:  # no C++ compiler, unsupported platform, ...
        log.warning("torch.compile of the interval kernels failed, using the eager ones: %s",
                    describe(error))
        vae.head.kernels = Kernels()
        return False
    return True
