"""How the cost grows: time per training step (and per MNIST epoch) against the batch size and
the number of samples, peak memory against the number of samples, evaluation time against K.

    python benchmarks/scaling.py [--device cpu|cuda] [--threads 1] [--rounds 3]
        [--bounds elbo ielbo] [--batches 25 50 100 200 400] [--samples 1 3 10 30 100]
        [--ks 10 100 1000 5000] [--parts steps memory evaluation]

Training steps are those of the bare loop of ``benchmarks/training.py`` (the package's own
step costs a few percent more, see that benchmark), the paper's network, compiled interval
kernels, Adam, clipping by norm 3. Each configuration is timed over ``--steps`` steps after two
warm-up steps, once per round, the configurations interleaved; the tables show medians. An
MNIST epoch is 50,000 images (500 steps at batch 100). Memory: the peak resident set (CPU) or
the peak of torch.cuda.max_memory_allocated (GPU) during two training steps, above the memory
before them, each sample count in its own process. Evaluation: ``log_likelihoods`` (chunks
sized ``auto``) of ``--eval-images`` MNIST test images with K samples, scaled to 1,000 images.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import (
    MNIST_TRAIN_IMAGES,
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
from training import CLIP, LR, make_bound

from intvae.estimate import log_likelihoods
from intvae.intervals import Fixed


def step_seconds(bound, data, batch, steps, device) -> float:
    """Seconds per training step (median of ``steps`` after 2 warm-up steps)."""
    vae = paper_vae().to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=LR, fused=True)
    times = []
    for i in range(steps + 2):
        x = data[(i * batch) % (len(data) - batch + 1):][:batch]
        sync(device)
        start = time.perf_counter()
        loss = -bound(vae, x).bound.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), CLIP)
        optimizer.step()
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return median(times)


def steps_table(title, column, values, make, data, args, device) -> None:
    """Time per step and per epoch of each bound at each value of ``column``."""
    print(f"\n## {title}")
    print(f"{column:>8} " + " ".join(f"{b + ' s/step':>14} {b + ' s/epoch':>15}"
                                      for b in args.bounds))
    variants = {(b, v): (lambda b=b, v=v: make(b, v)) for b in args.bounds for v in values}
    results = interleaved(variants, args.rounds)
    for v in values:
        cells = []
        for b in args.bounds:
            seconds = median(results[(b, v)])
            batch = v if column == "batch" else args.batch
            cells.append(f"{seconds:14.4f} {seconds * MNIST_TRAIN_IMAGES / batch:15.1f}")
        print(f"{v:>8} " + " ".join(cells), flush=True)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_worker(args) -> None:
    """Peak memory of two training steps (one process per configuration)."""
    device = setup(args)
    name, samples = args.memory_worker.split(":")
    bound = make_bound(name, int(samples))
    data = images(2 * args.batch)[0].to(device)
    vae = paper_vae().to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=LR, fused=True)

    def step(x):
        loss = -bound(vae, x).bound.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(data[:2])  # compile on a small batch
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS") * 1024
    for i in range(2):
        step(data[i * args.batch:(i + 1) * args.batch])
    if device.type == "cuda":
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _status_kib("VmHWM") * 1024
    print(json.dumps({"peak_mib": (peak - before) / 2**20}))


def memory_table(args) -> None:
    print(f"\n## peak memory of a training step (batch {args.batch}) against the samples")
    print(f"{'samples':>8} " + " ".join(f"{b + ' MiB':>12}" for b in args.bounds)
          + f" {'elements':>12}")
    for samples in args.samples:
        cells = []
        for b in args.bounds:
            command = [sys.executable, __file__, "--memory-worker", f"{b}:{samples}",
                       "--device", args.device, "--threads", str(args.threads),
                       "--batch", str(args.batch)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                cells.append(f"{'failed':>12}")
            else:
                peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
                cells.append(f"{peak:12.0f}")
        print(f"{samples:>8} " + " ".join(cells) + f" {samples * args.batch * 784:12,d}",
              flush=True)


def evaluation_table(args, device) -> None:
    x = images(args.eval_images, split="test")[0].to(device)
    vae = paper_vae().to(device).eval()
    log_likelihoods(vae, [x[:2]], 4, {"own": Fixed(0.01)}, "auto", progress=False)  # compile
    print(f"\n## evaluation (log P(I), chunks auto, {args.eval_images} images) against K")
    print(f"{'K':>8} {'s / 1000 images':>16} {'s / 10,000 images':>18}")

    def run(k):
        sync(device)
        start = time.perf_counter()
        log_likelihoods(vae, [x], k, {"own": Fixed(0.01)}, "auto", progress=False)
        sync(device)
        return time.perf_counter() - start

    results = interleaved({k: (lambda k=k: run(k)) for k in args.ks}, args.rounds)
    for k in args.ks:
        per_1000 = median(results[k]) * 1000 / len(x)
        print(f"{k:>8} {per_1000:16.1f} {10 * per_1000:18.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, rounds=3)
    parser.add_argument("--bounds", nargs="+", default=["elbo", "ielbo"])
    parser.add_argument("--batch", type=int, default=100, help="batch of the samples tables")
    parser.add_argument("--batches", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000, 5000])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=5)
    parser.add_argument("--parts", nargs="+", default=["steps", "memory", "evaluation"])
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        return memory_worker(args)
    device = setup(args)
    header("scaling: time and memory against batch size, samples and K", args)
    data = images(max(args.batches) * 4)[0].to(device)
    for b in args.bounds:  # compile every kernel before timing
        step_seconds(make_bound(b, 2), data, 2, 1, device)
    if "steps" in args.parts:
        steps_table(f"time per training step against the batch size (10 samples; epoch = "
                    f"{MNIST_TRAIN_IMAGES:,} images)", "batch", args.batches,
                    lambda b, v: step_seconds(make_bound(b, 10), data, v, args.steps, device),
                    data, args, device)
        steps_table(f"time per training step against the samples (batch {args.batch}; epoch "
                    f"= {MNIST_TRAIN_IMAGES // args.batch} steps)", "samples", args.samples,
                    lambda b, v: step_seconds(make_bound(b, v), data, args.batch, args.steps,
                                              device),
                    data, args, device)
    if "memory" in args.parts:
        memory_table(args)
    if "evaluation" in args.parts:
        evaluation_table(args, device)
    footer()


if __name__ == "__main__":
    main()
