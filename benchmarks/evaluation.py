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
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import add_common_arguments, footer, header, images, median, paper_vae, setup

from intvae.bounds import IWIELBO
from intvae.estimate import log_likelihoods, resolve_chunk_elements
from intvae.intervals import Fixed

VARIANTS = ["chunked:1048576", "chunked:4194304", "chunked:auto", "naive:1", "naive:4"]
INTERVAL = Fixed(0.01)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, rounds=3)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--no-compile", action="store_true", help="eager interval kernels")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
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
