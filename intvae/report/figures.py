"""The paper's figures of a VAE, drawn with matplotlib's object API (Agg canvas, no pyplot).

* ``reconstructions``: the paper's grid; rows are the original images, their reconstructions
  decoded from the encoder's mean m(x), and reconstructions decoded from a sampled
  z ~ q(z | x). A reconstruction shows the decoder's mean (sigmoid(loc) for the logit-normal).
* ``prior_samples``: decoder means for z ~ N(0, I).
* ``decoder_std``: histogram of the decoder's standard deviations (log10 sigma) over the images,
  z at the encoder's mean (the paper's figure 3), with the interval half-width delta marked.

The random draws use their own generator (seed 0), so drawing figures neither changes the
training's random stream nor differs between epochs except through the model.
"""

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from intvae.networks import VAE


@dataclass
class Drawn:
    """The figures by name, and the log10 decoder standard deviations (None without them)."""

    figures: dict[str, Figure]
    log10_std: torch.Tensor | None


def tile(images: torch.Tensor, image_shape: tuple[int, int, int], columns: int) -> np.ndarray:
    """Flattened images (N, C*H*W) in [0, 1] as one (rows*H + rows-1, columns*W + columns-1[, C])
    float32 array (2-D for one channel), laid out row by row by ``torchvision.utils.make_grid``:
    one pixel of white between tiles, no outer border, the last row filled with white."""
    channels, height, width = image_shape
    n = images.shape[0]
    slots = -(-n // columns) * columns
    pictures = torch.ones(slots, channels, height, width)
    pictures[:n] = images.detach().float().clamp(0, 1).reshape(n, channels, height, width).cpu()
    grid = make_grid(pictures, nrow=columns, padding=1, pad_value=1.0)
    if slots > 1:  # make_grid returns a lone image as it is, and frames several in a border
        grid = grid[:, 1:-1, 1:-1]
    # make_grid repeats a single channel three times: keep one
    return grid[0].numpy() if channels == 1 else grid.permute(1, 2, 0).numpy()


def image_figure(grid: np.ndarray, title: str, row_labels: list[str] | None = None) -> Figure:
    height, width = grid.shape[:2]
    fig = Figure(figsize=(max(3.0, width / 28 * 0.9 + 1.2), height / 28 * 0.9 + 0.6))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    if row_labels:
        step = (height + 1) / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], row_labels, fontsize=8)
    else:
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def std_figure(log10_std: torch.Tensor, delta: float | None) -> Figure:
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    ax.hist(log10_std.numpy(), bins=100, color="tab:blue")
    if delta is not None:
        ax.axvline(np.log10(delta), color="tab:red", linestyle="--", label=f"delta = {delta:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("log10 of the decoder's standard deviation")
    ax.set_ylabel("pixels")
    ax.set_title("decoder standard deviations, z = m(x)", fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def draw(vae: VAE, x: torch.Tensor, image_shape: tuple[int, int, int], num_images: int = 10,
         num_prior_samples: int = 64, delta: float | None = None) -> Drawn:
    """The figures for a batch ``x`` (N, D): the reconstructions of its first ``num_images``
    images, ``num_prior_samples`` prior samples and the histogram of decoder standard
    deviations over all of ``x``."""
    generator = torch.Generator(x.device).manual_seed(0)
    q = vae.encode(x)
    at_mean = vae.decode(q.loc)
    eps = torch.randn(q.loc.shape, generator=generator, device=x.device)
    sampled = vae.decode(q.loc + q.scale * eps)
    prior_z = torch.randn((num_prior_samples, vae.latent), generator=generator, device=x.device)
    n = min(num_images, len(x))
    rows = torch.cat([x[:n], at_mean.mean[:n], sampled.mean[:n]])
    figures = {
        "reconstructions": image_figure(
            tile(rows, image_shape, n), "originals and reconstructions",
            ["original", "from m(x)", "from z ~ q"]),
        "prior_samples": image_figure(
            tile(vae.decode(prior_z).mean, image_shape, 8), "decoder means, z ~ N(0, I)"),
    }
    scale = getattr(at_mean, "scale", None)
    log10_std = None
    if scale is not None:
        log10_std = scale.float().log10().flatten().cpu()
        figures["decoder_std"] = std_figure(log10_std, delta)
    return Drawn(figures, log10_std)
