"""Cost of one forward and backward pass of each bound, relative to the ELBO.

Batch 100, 784 pixels, 10 samples of z, float32, the paper's IELBO network. The bounds are
timed in interleaved rounds (one pass of each per round), so machine noise hits all alike; the
table shows the median time per pass and its ratio to the ELBO's median.

    python benchmarks/bounds.py [--rounds 30] [--threads 1] [--compile] [--device cpu|cuda]
        [--train-steps N]

``--train-steps N`` first trains the network for N steps with the IELBO (Adam, lr 3e-4,
clipping by norm 3, on MNIST when cached, else synthetic images), so that the decoder's
standard deviations, and with them the branches the interval kernels take (and the share of
their float32 fast path that falls back to float64), are those of a model in training rather
than those of random weights (sigma near 1 everywhere). The share of elements that fell back
is printed for the IELBO's and the IRELBO's kernels.
"""

import argparse
import statistics
import time

import torch
from common import add_common_arguments, footer, header, images, paper_vae, setup, sync

from intvae.bounds import ELBO, IELBO, IRELBO, IWAE, IWIELBO, MIWAE, VR, VRMax
from intvae.intervals import Fixed
from intvae.numerics import Kernels
from intvae.numerics.fast32 import fast_power_integral

TARGETS = {"ielbo": 1.3, "irelbo (alpha=2)": 1.6}


def bounds(samples: int) -> dict:
    interval = Fixed(0.01)
    return {
        "elbo": ELBO(samples),
        "ielbo": IELBO(interval, samples),
        "iw_ielbo": IWIELBO(interval, samples),
        "irelbo (alpha=2)": IRELBO(interval, 2.0, samples),
        "irelbo (alpha=0.5)": IRELBO(interval, 0.5, samples),
        "iwae": IWAE(samples),
        "vr (alpha=0.5)": VR(0.5, samples),
        "vr_max": VRMax(samples),
        "miwae (M=2, K=5)": MIWAE(2, samples // 2),
    }


def step_time(vae, bound, x) -> float:
    sync(x.device)
    start = time.perf_counter()
    loss = -bound(vae, x).bound.mean()
    loss.backward()
    sync(x.device)
    return time.perf_counter() - start


def train(vae, data: torch.Tensor, steps: int) -> None:
    """``steps`` IELBO steps (10 samples) on batches of 100 from ``data``."""
    bound = IELBO(Fixed(0.01), 10)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-4)
    for step in range(steps):
        x = data[(step * 100) % (len(data) - 99):][:100]
        loss = -bound(vae, x).bound.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 3.0)
        optimizer.step()


def fallback_share(vae, x: torch.Tensor, power: float, samples: int) -> float:
    """The share of (sample, image, pixel) elements whose interval kernel falls back to
    float64 (float32 on the CPU only; elsewhere everything is float64)."""
    with torch.no_grad():
        likelihood = vae.decode(vae.encode(x).rsample((samples,)))
        ok = fast_power_integral(x - 0.01, x + 0.01, likelihood.loc, likelihood.scale,
                                 power, (False, False, True, True))[2]
    return 1.0 - ok.float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, rounds=30)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--compile", action="store_true",
                        help="run the interval kernels through torch.compile")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="IELBO steps to train the network before timing")
    parser.add_argument("--no-fast-path", action="store_true",
                        help="time the float64 kernels only (as before the float32 fast path)")
    args = parser.parse_args()
    device = setup(args)
    header("bound costs: forward + backward of each bound relative to the ELBO", args)
    vae = paper_vae(compiled=args.compile).to(device)
    data, what = images(max(args.batch, 100 * min(args.train_steps, 200)))
    data = data.to(device)
    train(vae, data, args.train_steps)
    x = data[: args.batch]
    print(f"# data: {what}; network trained for {args.train_steps} IELBO steps")
    if device.type == "cpu":
        print(f"# share of kernel elements on the float64 fallback: ielbo "
              f"{fallback_share(vae, x, 1.0, args.samples):.4f}, irelbo (alpha=2) "
              f"{fallback_share(vae, x, -1.0, args.samples):.4f}")
    vae.head.kernels = Kernels(compiled=args.compile, fast32=not args.no_fast_path)
    candidates = bounds(args.samples)
    times = {name: [] for name in candidates}
    for round_ in range(args.rounds + 3):
        for name, bound in candidates.items():
            vae.zero_grad(set_to_none=True)
            t = step_time(vae, bound, x)
            if round_ >= 3:  # warm-up rounds are not counted
                times[name].append(t)
    base = statistics.median(times["elbo"])
    print(f"# batch {args.batch}, 784 pixels, {args.samples} samples, float32, "
          f"{args.threads} threads, {args.rounds} interleaved rounds, "
          f"kernels {'compiled' if args.compile else 'eager'}, float32 fast path "
          f"{'off' if args.no_fast_path else 'on'}")
    print(f"{'bound':<22}{'median ms':>10}{'x ELBO':>9}  target")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = f"<= {TARGETS[name]}" if name in TARGETS else ""
        print(f"{name:<22}{1e3 * med:>10.2f}{med / base:>9.2f}  {target}")
    footer()


if __name__ == "__main__":
    main()
