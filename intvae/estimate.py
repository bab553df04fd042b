"""Importance-sampled log-likelihood of a VAE: log P(I(x)) (and log p(x)) of images.

    log P(I(x)) ~ log (1/K) sum_k P(I(x) | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x),

the IW-IELBO with K samples (``intvae.bounds.IWIELBO``; the IWAE estimator of Burda, Grosse and
Salakhutdinov 2016 on the intervals of the integral bounds paper): a stochastic lower bound
that tends to log P(I) as K grows (``docs/math.md``, the importance-sampled estimator). With
the density p(x | z_k) in place of P(I(x) | z_k) it is IWAE_K, an estimate of log p(x).

**One pass, shared samples.** ``log_likelihoods`` estimates several quantities at once (e.g. the
run's own intervals and the 8-bit bins): each chunk of z samples is drawn and decoded once, and
its likelihood gives the data term of every estimate. Each estimate is still the IWAE estimator
of its own quantity over K independent draws from q, so each remains a valid stochastic lower
bound with the same expectation as if it had its own draws; only the estimates' errors are
correlated with each other.

**Memory.** The K samples of a batch are drawn in chunks of at most ``chunk_elements`` = K_chunk
x batch x pixels decoder outputs (``auto``: sized from the memory available now,
``resolve_chunk_elements``).
"""

import math
import os

import torch
from tqdm import tqdm

from intvae.bounds.base import Bound, check_likelihood, log_weights
from intvae.likelihoods import INTERVAL

DEFAULT_CHUNK_ELEMENTS = 2**22  # 4M decoder outputs: about 1.3 GB of peak memory on a CPU

# Peak memory per decoder output (K_chunk * batch * pixels) of one chunk of the evaluation,
# measured by benchmarks/evaluation.py on a CPU (paper network, float32): about 30 bytes with
# the compiled kernels, 330 with the eager ones; with room to spare. "auto" sizes a chunk to use
# at most AUTO_MEMORY_FRACTION of the memory available now, within AUTO_CHUNK_RANGE (on a CPU
# chunks of 2**20 to 2**23 outputs ran equally fast).
BYTES_PER_CHUNK_ELEMENT = 400
AUTO_MEMORY_FRACTION = 0.25
AUTO_CHUNK_RANGE = {"cpu": (2**16, 2**23), "cuda": (2**16, 2**28)}


def available_memory(device: torch.device) -> int:
    """Bytes of memory available now: free GPU memory on a CUDA device
    (``torch.cuda.mem_get_info``), else the host's MemAvailable (/proc/meminfo, or free
    physical pages where that file is missing)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resolve_chunk_elements(chunk_elements: int | str, device: torch.device) -> int:
    """Decoder outputs per chunk: ``chunk_elements``, or for ``auto`` a size from the memory
    available on ``device`` (``AUTO_MEMORY_FRACTION`` of it at ``BYTES_PER_CHUNK_ELEMENT`` per
    output, clamped to ``AUTO_CHUNK_RANGE``: on a CPU larger chunks are no faster)."""
    if chunk_elements != "auto":
        return chunk_elements
    low, high = AUTO_CHUNK_RANGE.get(device.type, AUTO_CHUNK_RANGE["cuda"])
    budget = AUTO_MEMORY_FRACTION * available_memory(device) / BYTES_PER_CHUNK_ELEMENT
    return int(min(max(budget, low), high))


@torch.no_grad()
def log_likelihoods(vae, batches: list[torch.Tensor], samples: int, intervals: dict,
                    chunk_elements: int | str = DEFAULT_CHUNK_ELEMENTS,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """Per-image estimates (float64, nats, on the CPU) with K = ``samples``, for ``batches`` of
    images on the model's device: for each ``name -> interval`` of ``intervals``, log P(I(x))
    under that interval policy, or log p(x) where the interval is None. One pass: each chunk of
    z samples is decoded once for all of them (module docstring)."""
    if batches:
        chunk_elements = resolve_chunk_elements(chunk_elements, batches[0].device)
    values = {name: [] for name in intervals}
    draw = Bound()
    with tqdm(total=sum(len(x) for x in batches), unit="img", disable=not progress,
              desc=f"log-likelihood, K={samples}") as bar:
        for x in batches:
            chunks = math.ceil(samples / max(1, chunk_elements // x.numel()))
            chunk = math.ceil(samples / chunks)  # near-equal chunks: few compiled shapes
            totals = {name: torch.full((len(x),), -math.inf, dtype=torch.float64,
                                       device=x.device) for name in intervals}
            for start in range(0, samples, chunk):
                s = draw.draw(vae, x, samples=min(chunk, samples - start))
                for name, interval in intervals.items():
                    if interval is not None:
                        check_likelihood(f"estimate {name}", INTERVAL, type(s.likelihood))
                    weights = log_weights(s, x, interval)[1].double()
                    totals[name] = torch.logaddexp(totals[name], torch.logsumexp(weights, 0))
            for name, total in totals.items():
                values[name].append(total - math.log(samples))
            bar.update(len(x))
    return {name: torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.float64)
            for name, parts in values.items()}
