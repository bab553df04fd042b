"""Evaluation: the importance-sampled log-likelihood with K = 5000, time per 1,000 images and
peak memory, chunked (``intvae.estimate.log_likelihoods``) against a naive unchunked estimate.

    python benchmarks/evaluation.py [--samples 5000] [--images 10] [--rounds 3]
        [--device cpu|cuda] [--threads 1] [--variants ...]

Each variant runs in its own process (so that its peak memory is its own), in interleaved
rounds; it evaluates ``--images`` MNIST test images (synthetic images without the cache) with
the paper's IELBO network (random weights; the cost per sample does not depend on them), the
interval [x - 0.01, x + 0.01] and compiled kernels (``--no-compile``: eager), after a warm-up, and
reports the time scaled to 1,000 images and the peak memory during the timed run above the
memory before it (CPU: the process's peak resident set, reset with /proc/self/clear_refs; CUDA:
torch.cuda.max_memory_allocated).

Variants: ``chunked:N`` is ``log_likelihoods`` on batches of 100 images with chunks of at most
N decoder outputs (``auto``: sized from the available memory); ``naive:B`` evaluates the
IW-IELBO with all K samples at once on batches of B images (K * B * 784 decoder outputs in
one piece: for K = 5000 only small B fit in memory).

``--collapse``: instead, the evaluation (``log_likelihoods``, batches of 100, chunks ``auto``)
on a healthy decoder (random weights: standard deviations near 1) and on a collapsed one (the
same network with the scale half of the decoder's last layer set to weight 0 and bias
log(sigma), sigma drawn per pixel log-uniformly in [1e-13, 1e-9], the standard deviations the
exact IELBO reaches), for the run's own fixed intervals (delta 0.01) and the 8-bit bins (open
end bins), in interleaved rounds in one process: images per second, and the share of kernel
elements on the float32 fast path and on the float64 fallback (the ok mask of
``fast_power_integral`` on one chunk; on CUDA the fast path is off and every element runs the
float64 kernel). Small by default (``--collapse-images 300 --collapse-samples 20``); the full
size is ``--collapse-images 10000 --collapse-samples 5000``.
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import (
    add_common_arguments,
    footer,
    header,
    images,
    interleaved,
    median,
    paper_vae,
    setup,
    sync,
)

from intvae.bounds import IWIELBO
from intvae.estimate import log_likelihoods, resolve_chunk_elements
from intvae.intervals import Bins, Fixed
from intvae.numerics.fast32 import fast_power_integral

VARIANTS = ["chunked:1048576", "chunked:4194304", "chunked:auto", "naive:1", "naive:4"]
INTERVAL = Fixed(0.01)
BINS = Bins(256, eps=1e-3)  # the 8-bit bins of the data in [eps, 1 - eps] (``images``)
COLLAPSED_SIGMA = (1e-13, 1e-9)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def naive(vae, x: torch.Tensor, samples: int) -> torch.Tensor:
    """log (1/K) sum_k exp(log w_k), all K samples in one piece."""
    with torch.no_grad():
        return IWIELBO(INTERVAL, samples=samples)(vae, x).bound.double()


def worker(args) -> None:
    device = setup(args)
    vae = paper_vae(compiled=not args.no_compile).to(device).eval()
    x = images(args.images, split="test")[0].to(device)
    kind, value = args.worker.split(":")
    if kind == "chunked":
        chunk = value if value == "auto" else int(value)
        batch = 100

        def run(data, samples):
            batches = [data[i:i + batch] for i in range(0, len(data), batch)]
            return log_likelihoods(vae, batches, samples, {"own": INTERVAL}, chunk,
                                   progress=False)["own"]
    else:
        batch = int(value)

        def run(data, samples):
            return torch.cat([naive(vae, data[i:i + batch], samples)
                              for i in range(0, len(data), batch)])
    run(x[:2], 4)  # compile
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set
        before = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    values = run(x, args.samples)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _rss_kib("VmHWM") * 1024
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds_per_1000": 1000 * seconds / len(x),
                      "peak_mib": (peak - before) / 2**20,
                      "chunk_elements": resolve_chunk_elements(chunk, device)
                      if kind == "chunked" else args.samples * batch * x.shape[1],
                      "mean": values.mean().item()}))


def collapse(vae, sigma: tuple[float, float] = COLLAPSED_SIGMA, seed: int = 1) -> None:
    """Collapse ``vae``'s decoder in place: the scale half of its last layer gets weight 0 and
    bias log(sigma), sigma log-uniform in ``sigma`` per pixel (the means are untouched)."""
    last = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    pixels = last.out_features // 2
    generator = torch.Generator().manual_seed(seed)
    low, high = math.log(sigma[0]), math.log(sigma[1])
    log_sigma = low + (high - low) * torch.rand(pixels, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        last.weight[pixels:] = 0.0
        last.bias[pixels:] = log_sigma.to(last.bias)


def fast_share(vae, x: torch.Tensor, interval, samples: int) -> tuple[float, float, float]:
    """On one chunk (``samples`` z per image of ``x``): the share of kernel elements that the
    float32 fast path serves (its ok mask), and the decoder's smallest and largest sigma."""
    with torch.no_grad():
        likelihood = vae.decode(vae.encode(x).sample((samples,)))
        lo, hi = interval(x)
        ok = fast_power_integral(lo, hi, likelihood.loc, likelihood.scale, 1.0,
                                 (False,) * 4)[2]
    scale = likelihood.scale
    return ok.float().mean().item(), scale.min().item(), scale.max().item()


def compare_collapse(args) -> None:
    """The ``--collapse`` comparison (module docstring)."""
    device = setup(args)
    compiled = not args.no_compile
    header(f"evaluation: healthy vs collapsed decoder (sigma {COLLAPSED_SIGMA[0]:g} to "
           f"{COLLAPSED_SIGMA[1]:g}), K = {args.collapse_samples}, kernels "
           f"{'compiled' if compiled else 'eager'}", args)
    x, what = images(args.collapse_images, split="test")
    x = x.to(device)
    print(f"# {len(x)} images per run ({what}), batches of 100, chunks auto; "
          f"{args.rounds} interleaved rounds, median")
    healthy = paper_vae(compiled=compiled).to(device).eval()
    collapsed = paper_vae(compiled=compiled).to(device).eval()
    collapse(collapsed)
    decoders = {"healthy": healthy, "collapsed": collapsed}
    intervals = {"fixed 0.01": INTERVAL, "bins 8-bit": BINS}
    batches = [x[i:i + 100] for i in range(0, len(x), 100)]

    def timed(vae, interval):
        def run():
            sync(device)
            start = time.perf_counter()
            values = log_likelihoods(vae, batches, args.collapse_samples, {"i": interval},
                                     "auto", progress=False)["i"]
            sync(device)
            seconds = time.perf_counter() - start
            means[key(vae, interval)] = values.mean().item()
            return seconds
        return run

    names = {id(v): n for n, v in decoders.items()} | {id(i): n for n, i in intervals.items()}

    def key(vae, interval):
        return f"{names[id(vae)]}, {names[id(interval)]}"

    means: dict[str, float] = {}
    variants = {key(v, i): timed(v, i) for v in decoders.values() for i in intervals.values()}
    for vae in decoders.values():  # warm-up (compilation) on every path
        for interval in intervals.values():
            log_likelihoods(vae, batches[:1], 2, {"i": interval}, "auto", progress=False)
    results = interleaved(variants, args.rounds)
    base = median(results[next(iter(results))])
    print(f"{'decoder, intervals':24} {'images/s':>9} {'x first':>8} {'fast path':>10} "
          f"{'float64':>8} {'sigma min':>10} {'sigma max':>10} {'mean log P(I)':>14}")
    for vae_name, vae in decoders.items():
        for interval_name, interval in intervals.items():
            name = f"{vae_name}, {interval_name}"
            seconds = median(results[name])
            share, low, high = fast_share(vae, x[:100], interval, args.collapse_samples)
            print(f"{name:24} {len(x) / seconds:9.1f} {seconds / base:8.2f} {share:10.4f} "
                  f"{1 - share:8.4f} {low:10.2e} {high:10.2e} {means[name]:14.5g}")
    print("# fast path / float64: shares of the kernel elements of one chunk (100 images x "
          f"{args.collapse_samples} samples x 784 pixels) served by the float32 fast path and "
          "sent to the float64 fallback" + ("" if device.type == "cpu" else
                                           " (on CUDA the fast path is off: all float64)"))
    footer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, rounds=3)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--no-compile", action="store_true", help="eager interval kernels")
    parser.add_argument("--collapse", action="store_true",
                        help="compare a healthy and a collapsed decoder (module docstring)")
    parser.add_argument("--collapse-images", type=int, default=300)
    parser.add_argument("--collapse-samples", type=int, default=20)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.collapse:
        return compare_collapse(args)
    setup(args)
    header(f"evaluation: log P(I) with K = {args.samples}, chunked vs naive, kernels "
           f"{'eager' if args.no_compile else 'compiled'}", args)
    print(f"# {args.images} images per run, scaled to 1,000; {images(1, split='test')[1]}")
    results = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for variant in (args.variants if r % 2 == 0 else args.variants[::-1]):
            command = [sys.executable, __file__, "--worker", variant, "--device", args.device,
                       "--threads", str(args.threads), "--samples", str(args.samples),
                       "--images", str(args.images)] + (["--no-compile"] if args.no_compile
                                                         else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                results[variant].append({"error": f"exit {done.returncode}: {tail}"})
            else:
                results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    reference = args.variants[0]
    base = median([r["seconds_per_1000"] for r in results[reference] if "error" not in r])
    print(f"{'variant':18} {'elements/piece':>15} {'s / 1000 images':>16} {'x ' + reference:>20}"
          f" {'peak MiB':>9} {'mean log P(I)':>14}")
    for variant, runs in results.items():
        good = [r for r in runs if "error" not in r]
        if not good:
            print(f"{variant:18} failed: {runs[0]['error']}")
            continue
        seconds = median([r["seconds_per_1000"] for r in good])
        peak = median([r["peak_mib"] for r in good])
        print(f"{variant:18} {good[0]['chunk_elements']:15,d} {seconds:16.1f} "
              f"{seconds / base:20.2f} {peak:9.0f} {good[0]['mean']:14.2f}")
    footer()


if __name__ == "__main__":
    main()
