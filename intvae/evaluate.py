"""Importance-sampled log-likelihood of a trained VAE: log P(I) of the test images.

    log P(I(x)) ~ log (1/K) sum_k P(I(x) | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x),

the IW-IELBO with K samples (``intvae.bounds.iw_ielbo``; Burda, Grosse and Salakhutdinov 2016
on the intervals of the integral bounds paper), a lower bound that tends to log P(I) as K grows.
For a likelihood without interval probabilities (bernoulli, beta) the density log p(x) is
estimated instead, by IWAE_K. Bits per dimension, -log P(I) / (D log 2), are reported only where
the intervals of neighbouring pixel levels do not overlap, so that P(I) is a discrete likelihood
(``../shared/spec/bounds.md`` section 8). For other intervals (the paper's fixed delta) the
images are evaluated a second time under the 8-bit bins, so every run gets bits per dimension.

K defaults to 5000 on a GPU, the papers' value, and to 100 on the CPU, where 5000 samples of
the 10,000 MNIST test images would take hours. The K samples of a batch are drawn in chunks of
at most ``chunk_elements`` = K_chunk * batch * pixels decoder outputs, which bounds the memory
(``auto``: sized from the memory available, ``resolve_chunk_elements``).

    python -m intvae.evaluate run=<output dir or checkpoint> [samples=K] [split=test]
        [data.root=DIR] [chunk_elements=N|auto] [limit_batches=N] [device=cpu|cuda] [compile=false]
        [bits_per_dim=false]

evaluates ``<dir>/checkpoints/last.ckpt`` (or the given checkpoint) and adds the result to the
run's ``results.json``. Checkpoints are read with ``weights_only=True`` (``intvae.checkpoints``):
a corrupt, truncated or malicious file ends the program with one line naming it.
"""

# isort: off
import intvae.tool_caches  # noqa: F401  (first: keeps the tools' caches in intvae's cache folder)
# isort: on
import math
import os
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm import tqdm

from intvae.bounds import IWAE, IWIELBO
from intvae.checkpoints import LAST_CHECKPOINT, read_checkpoint, run_config
from intvae.config import USER_ERRORS, ConfigError, check_chunk_elements, describe
from intvae.intervals import Bins
from intvae.module import build_vae, select_kernels
from intvae.networks import VAE
from intvae.results import RESULTS_FILE, update_results

DEFAULT_SAMPLES = {"cpu": 100, "cuda": 5000}
DEFAULT_CHUNK_ELEMENTS = 2**22  # 4M decoder outputs: about 1.3 GB of peak memory on a CPU


def resolve_samples(samples, device: torch.device) -> int:
    """K: ``samples``, or for ``auto``/None the default of ``device``'s type."""
    if samples in (None, "auto"):
        return DEFAULT_SAMPLES.get(device.type, DEFAULT_SAMPLES["cuda"])
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConfigError(f"evaluate.samples={samples!r} is invalid: it must be an integer >= 1 "
                          "or auto")
    return samples


def likelihood_kind(vae: VAE) -> str:
    """``"interval"`` if the decoder's likelihood has interval probabilities, else
    ``"density"``."""
    device = next(vae.parameters()).device
    with torch.no_grad():
        likelihood = vae.decode(torch.zeros(1, vae.latent, device=device))
    return "interval" if likelihood.has_interval else "density"


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


def resolve_chunk_elements(chunk_elements, device: torch.device) -> int:
    """Decoder outputs per chunk: ``chunk_elements``, or for ``auto`` a size from the memory
    available on ``device`` (``AUTO_MEMORY_FRACTION`` of it at ``BYTES_PER_CHUNK_ELEMENT`` per
    output, clamped to ``AUTO_CHUNK_RANGE``: on a CPU larger chunks are no faster)."""
    if chunk_elements == "auto":
        low, high = AUTO_CHUNK_RANGE.get(device.type, AUTO_CHUNK_RANGE["cuda"])
        budget = AUTO_MEMORY_FRACTION * available_memory(device) / BYTES_PER_CHUNK_ELEMENT
        return int(min(max(budget, low), high))
    check_chunk_elements(chunk_elements)
    return chunk_elements


@torch.no_grad()
def log_likelihood(vae, interval, batches: list[torch.Tensor], samples: int,
                   chunk_elements: int | str = DEFAULT_CHUNK_ELEMENTS,
                   progress: bool = True) -> torch.Tensor:
    """Per-image estimates (float64, nats) of log P(I) with K = ``samples`` (of log p(x) if
    ``interval`` is None) for ``batches`` of images on the model's device, drawing the K
    samples of a batch in chunks of at most ``chunk_elements`` decoder outputs (``auto``:
    sized from the memory available, ``resolve_chunk_elements``)."""
    if batches:
        chunk_elements = resolve_chunk_elements(chunk_elements, batches[0].device)
    values = []
    name = "p(x)" if interval is None else "P(I)"
    with tqdm(total=sum(len(x) for x in batches), unit="img", disable=not progress,
              desc=f"log {name}, K={samples}") as bar:
        for x in batches:
            chunks = math.ceil(samples / max(1, chunk_elements // x.numel()))
            chunk = math.ceil(samples / chunks)  # near-equal chunks: few compiled shapes
            total = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
            for start in range(0, samples, chunk):
                k = min(chunk, samples - start)
                bound = IWAE(samples=k) if interval is None else IWIELBO(interval, samples=k)
                log_weights = bound(vae, x).log_weights.double()
                total = torch.logaddexp(total, torch.logsumexp(log_weights, dim=0))
            values.append(total - math.log(samples))
            bar.update(len(x))
    return torch.cat(values).cpu()


def evaluate(vae: VAE, interval, datamodule, samples, device: torch.device,
             split: str = "test", chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
             limit_batches: int | None = None, progress: bool = True,
             bits_per_dim: bool = True) -> dict:
    """The ``results.json`` fields of the log-likelihood of ``split`` (test or val), on one
    device (exact: every image counted once).

    With ``bits_per_dim`` and intervals that do not form a discrete likelihood (e.g. the
    paper's fixed delta), the images are evaluated a second time under the 8-bit bins
    (``intvae.intervals.Bins``), whose P(I) is a discrete likelihood: the number that compares
    every bound, likelihood and noise fix on one scale (``<split>_log_likelihood_bins``)."""
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r} is invalid: split must be test or val")
    k = resolve_samples(samples, device)
    datamodule.setup("test" if split == "test" else "validate")
    loader = datamodule.whole_split(split)  # never a DDP rank's shard
    batches = [x.to(device) for x in list(loader)[:limit_batches]]
    kind = likelihood_kind(vae.to(device))
    start = time.perf_counter()
    values = log_likelihood(vae, interval if kind == "interval" else None, batches, k,
                            chunk_elements, progress)
    fields = {
        f"{split}_log_likelihood": values.mean().item(),
        "log_likelihood_kind": kind,
        "k": k,
        "eval_images": len(values),
        "bits_per_dim": None,
    }
    if kind == "interval":
        discrete = values if interval.is_discrete(datamodule.levels, datamodule.eps) else None
        if discrete is None and bits_per_dim:
            bins = Bins(datamodule.levels, datamodule.eps)
            discrete = log_likelihood(vae, bins, batches, k, chunk_elements, progress)
            fields[f"{split}_log_likelihood_bins"] = discrete.mean().item()
        if discrete is not None:
            fields["bits_per_dim"] = -discrete.mean().item() / (datamodule.num_pixels
                                                                * math.log(2))
    fields["eval_seconds"] = round(time.perf_counter() - start, 1)
    return fields


def find_checkpoint(run: str | Path) -> tuple[Path, Path]:
    """(checkpoint, run directory) for a run directory or a checkpoint file."""
    run = Path(run).expanduser()
    ckpt = run / LAST_CHECKPOINT if run.is_dir() else run
    if not ckpt.is_file():
        raise ConfigError(f"run={run} is invalid: no checkpoint {ckpt}")
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return ckpt, run_dir


def load_checkpoint(ckpt: Path) -> tuple[dict, dict]:
    """The checkpoint (tensors on the CPU) and the run's resolved config it carries.

    Loaded with ``weights_only=True`` (``intvae.checkpoints.read_checkpoint``): a corrupt or
    truncated file, or one holding anything but tensors and plain containers, is refused with a
    one-line ``ConfigError`` naming it, and nothing in it runs. The config is admitted only if
    it names nothing but intvae's own classes (``intvae.checkpoints.run_config``)."""
    checkpoint = read_checkpoint(ckpt, "run")
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    return checkpoint, run_config(config, f"run={ckpt} is invalid")


def load_vae(checkpoint: dict, cfg, num_pixels: int) -> VAE:
    """The trained VAE of ``checkpoint``, built from ``cfg`` (the run's config)."""
    vae = build_vae(cfg, num_pixels)
    vae.load_state_dict({k.removeprefix("vae."): v for k, v in checkpoint["state_dict"].items()
                         if k.startswith("vae.")})
    return vae.eval()


def main(argv: list[str]) -> dict:
    """``python -m intvae.evaluate run=... [key=value ...]`` (see the module docstring)."""
    args = OmegaConf.from_dotlist(argv)
    unknown = set(args) - {"run", "samples", "split", "data", "chunk_elements", "limit_batches",
                           "device", "compile", "bits_per_dim"}
    if "run" not in args or unknown:
        raise ConfigError(f"usage: python -m intvae.evaluate run=<output dir or checkpoint> "
                          f"[samples=K] [split=test|val] ...; unknown keys: {sorted(unknown)}")
    ckpt, run_dir = find_checkpoint(args.run)
    checkpoint, config = load_checkpoint(ckpt)
    cfg = OmegaConf.merge(config, {"data": args.get("data", {})})
    datamodule = instantiate(cfg.data)
    vae = load_vae(checkpoint, cfg, datamodule.num_pixels)
    interval = instantiate(cfg.interval)
    used = interval if likelihood_kind(vae) == "interval" else None
    grey = torch.full((2, vae.num_pixels), 0.5)
    select_kernels(args.get("compile", True),
                   lambda: log_likelihood(vae, used, [grey], 2, progress=False))
    device = torch.device(args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    fields = evaluate(vae, interval, datamodule, args.get("samples"), device,
                      args.get("split", "test"), args.get("chunk_elements", DEFAULT_CHUNK_ELEMENTS),
                      args.get("limit_batches"), bits_per_dim=args.get("bits_per_dim", True))
    return update_results(run_dir / RESULTS_FILE, **fields, checkpoint=str(ckpt))


if __name__ == "__main__":
    try:
        print(OmegaConf.to_yaml(main(sys.argv[1:])), end="")
    except USER_ERRORS as error:  # one line for the user, not a traceback
        sys.exit(f"error: {describe(error)}")
