"""Cost of one forward and backward pass of each bound, relative to the ELBO.

Batch 100, 784 pixels, 10 samples of z, float32, CPU, the paper's IELBO network. The bounds are
timed in interleaved rounds (one pass of each per round), so machine noise hits all alike; the
table shows the median time per pass and its ratio to the ELBO's median.

    python benchmarks/bounds.py [--rounds 30] [--threads N] [--compile]
"""

import argparse
import statistics
import time

import torch

from intvae.bounds import ELBO, IELBO, IRELBO, IWAE, IWIELBO, MIWAE, VR, VRMax
from intvae.intervals import Fixed
from intvae.likelihoods import GaussianHead
from intvae.networks import VAE
from intvae.numerics import compile_kernels

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
    start = time.perf_counter()
    loss = -bound(vae, x).bound.mean()
    loss.backward()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true",
                        help="run the interval kernels through torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compile_kernels(args.compile)
    torch.manual_seed(0)
    vae = VAE(784, GaussianHead(), hidden=[200, 200], latent=25)
    x = torch.rand(args.batch, 784) * 0.998 + 0.001
    candidates = bounds(args.samples)
    times = {name: [] for name in candidates}
    for round_ in range(args.rounds + 3):
        for name, bound in candidates.items():
            vae.zero_grad(set_to_none=True)
            t = step_time(vae, bound, x)
            if round_ >= 3:  # warm-up rounds are not counted
                times[name].append(t)
    base = statistics.median(times["elbo"])
    print(f"batch {args.batch}, 784 pixels, {args.samples} samples, float32, "
          f"{args.threads} threads, {args.rounds} interleaved rounds, "
          f"kernels {'compiled' if args.compile else 'eager'}")
    print(f"{'bound':<22}{'median ms':>10}{'x ELBO':>9}  target")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = f"<= {TARGETS[name]}" if name in TARGETS else ""
        print(f"{name:<22}{1e3 * med:>10.2f}{med / base:>9.2f}  {target}")


if __name__ == "__main__":
    main()
