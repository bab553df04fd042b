"""What the benchmarks share: the machine's state, the data, the model and interleaved timing.

Every benchmark prints ratios of variants measured side by side in one run, in interleaved
rounds (one run of each variant per round, the order alternating), with medians over the
rounds, so that the load of a shared machine hits all variants alike. The header records the
load average before the run and the footer after it (``os.getloadavg``: runnable processes
averaged over 1, 5 and 15 minutes; above the number of cores, the variants were sharing them).
"""

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from intvae.data.cache import cache_path, data_root, read_cache
from intvae.data.preprocessing import scale_levels
from intvae.data.registry import DATASETS
from intvae.data.synthetic import synthetic_images
from intvae.likelihoods import GaussianHead
from intvae.networks import VAE
from intvae.numerics import Kernels

PIXELS = 784
MNIST_TRAIN_IMAGES = 50_000


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def header(title: str, args) -> None:
    """Print what was run, on what, and the load now."""
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else platform.processor() or platform.machine())
    print(f"# {title}")
    print(f"# torch {torch.__version__}, {device} ({where}), {torch.get_num_threads()} "
          f"threads; {load()} (before)")
    print(f"# arguments: {vars(args)}")


def footer() -> None:
    print(f"# {load()} (after)")


def add_common_arguments(parser, rounds: int = 5) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the app's default: 1)")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds")


def setup(args) -> torch.device:
    torch.set_num_threads(args.threads)
    return torch.device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images(n: int, root: str | None = None, seed: int = 0,
           split: str = "train") -> tuple[torch.Tensor, str]:
    """``n`` images, float32 in [eps, 1 - eps] (eps = 0.001) of shape (n, 784): MNIST's
    ``split`` when it is cached under the data root, else synthetic 28x28 images."""
    spec = DATASETS["mnist"]
    path = cache_path(spec, data_root(root))
    if path.exists():
        levels, what = read_cache(path, spec)[0][split][:n], f"MNIST {split} images ({path})"
    else:
        levels, what = synthetic_images(n, seed=seed), "synthetic images (no MNIST cache)"
    levels = torch.from_numpy(np.ascontiguousarray(levels)).reshape(len(levels), -1)
    if len(levels) < n:  # repeat to n rows
        levels = levels.repeat(-(-n // len(levels)), 1)[:n]
    return scale_levels(levels, eps=1e-3), what


def paper_vae(seed: int = 0, compiled: bool = True) -> VAE:
    """The paper's IELBO network: 2 x 200 ELU units each side, latent 25, Gaussian decoder,
    its interval kernels compiled or eager (``intvae.numerics.Kernels``)."""
    torch.manual_seed(seed)
    head = GaussianHead()
    head.kernels = Kernels(compiled=compiled)
    return VAE(PIXELS, head, hidden=[200, 200], latent=25)


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once per round (order alternating between rounds); each call returns
    its measurement. Returns the measurements per variant."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            results[name].append(variants[name]())
    return results


def median(values) -> float:
    return statistics.median(values)


def ratio_summary(numerator: list[float], denominator: list[float]) -> str:
    """Median of the per-round ratios, with their range."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return f"{median(ratios):.3f} (rounds: {min(ratios):.3f} .. {max(ratios):.3f})"


class StepClock:
    """Times steps ``warmup`` .. ``warmup + steps``: call ``tick(i)`` at the start of step i;
    ``rate`` is steps per second between the starts of step ``warmup`` and step ``warmup +
    steps`` (so startup and warm-up are excluded and everything a step does is included)."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.end = None

    def tick(self, i: int) -> None:
        if i == self.warmup or i == self.warmup + self.steps:
            sync(self.device)
            now = time.perf_counter()
            if i == self.warmup:
                self.start = now
            else:
                self.end = now

    @property
    def rate(self) -> float:
        return self.steps / (self.end - self.start)
