"""The whole training step of the integral bounds relative to the ELBO's, as users run it.

    python benchmarks/step.py [--rounds 5] [--steps 20] [--warmup 5] [--epoch-steps 500]
        [--threads 1] [--device cpu|cuda] [--no-compile] [--breakdown]

Each step is ``VAEModule`` in a Lightning ``Trainer`` with the app's settings (the "package"
variant of ``benchmarks/training.py``: precision 32-true, clipping, CSV logger, metrics,
progress bar, non-finite guard), batch 100, 10 samples of z, the paper's network (2 x 200 ELU,
latent 25), ``threads`` torch threads, the interval kernels compiled (the app's ``compile:
true``). Two networks: fresh (seed 0) and trained for one epoch (``--epoch-steps`` IELBO steps,
batch 100, on MNIST's training images when cached, else synthetic ones), whose decoder standard
deviations, and with them the kernels' branches, are those of training. Each round times every
(network, bound) pair once; the ratio reported is the median over rounds of the per-round ratio
of step times (bound / ELBO), with its range. Targets (issue 14): IELBO <= 1.3, IRELBO
(alpha = 2) <= 1.6.

``--breakdown`` adds, for each network and each power (1 for the IELBO, -1 for the IRELBO with
alpha = 2), where the interval kernel's time goes on one batch of decoder outputs: the share of
elements each branch of the float32 fast path keeps (narrow, wide, one tail) and the share left
to the float64 kernel, the time of each branch on the elements it is given, and the forward and
backward of the whole likelihood term against the Gaussian density's (the ELBO's).
"""

import argparse
import statistics
import time

import torch
from bounds import train
from common import add_common_arguments, footer, header, images, setup
from training import lightning_run, make_bound, network

from intvae.numerics import Kernels, log_normal_power_integral
from intvae.numerics.fast32 import TIERS

TARGETS = {"ielbo": 1.3, "irelbo": 1.6}
TIER_NAMES = ("narrow", "wide (straddling)", "one tail")


def timed(fn, repeats: int = 7) -> float:
    """Median seconds of ``repeats`` calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def breakdown(vae, x: torch.Tensor, kernels: Kernels) -> None:
    """Per power: the fast path's branch shares and times on one batch of decoder outputs,
    and the likelihood term's forward + backward against the Gaussian density's."""
    with torch.no_grad():
        lik = vae.decode(vae.encode(x).rsample((10,)))
    loc, scale = lik.loc.contiguous(), lik.scale.contiguous()
    lo, hi = x - 0.01, x + 0.01
    needs = (False, False, True, True)

    def density():
        loc_, scale_ = loc.detach().requires_grad_(), scale.detach().requires_grad_()
        torch.distributions.Normal(loc_, scale_).log_prob(x).sum().backward()

    base = timed(density)
    for power in (1.0, -1.0):
        def term(power=power):
            loc_, scale_ = loc.detach().requires_grad_(), scale.detach().requires_grad_()
            log_normal_power_integral(lo, hi, loc_, scale_, power, kernels).sum().backward()

        total = timed(term)
        args = [t.expand(loc.shape).reshape(-1) for t in (lo, hi, loc, scale)]
        parts = []
        for tier in range(3 if power > 0 else 2):
            fn = kernels._float32(tier) if kernels.compiled else TIERS[tier]
            seconds = timed(lambda fn=fn, args=args, p=power: fn(*args, p, needs, False))
            ok = fn(*args, power, needs, False)[2]
            parts.append(f"{TIER_NAMES[tier]} {ok.sum().item() / loc.numel():.4f} of the "
                         f"elements ({1e3 * seconds:.1f} ms on {len(args[0]):,})")
            args = [t[~ok] for t in args]
        print(f"# power {power:+g}: {'; '.join(parts)}; float64 {len(args[0]) / loc.numel():.4f}"
              f"; likelihood term forward + backward {1e3 * total:.1f} ms, Gaussian density "
              f"{1e3 * base:.1f} ms ({total / base:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--epoch-steps", type=int, default=500,
                        help="IELBO steps of the 'trained' network (one MNIST epoch: 500)")
    parser.add_argument("--no-compile", action="store_true", help="eager interval kernels")
    parser.add_argument("--breakdown", action="store_true",
                        help="also where the interval kernel's time goes, per branch")
    args = parser.parse_args()
    args.batch, args.samples = 100, 10
    device = setup(args)
    header("whole training step of each bound relative to the ELBO (app settings)", args)
    data, what = images(max(100 * args.epoch_steps, (args.warmup + args.steps + 2) * 100))
    data = data.to(device)
    fresh = network(args, device)
    trained = network(args, device)
    start = time.perf_counter()
    train(trained, data, args.epoch_steps)
    print(f"# data: {what}; 'trained': {args.epoch_steps} IELBO steps "
          f"({time.perf_counter() - start:.0f} s); kernels "
          f"{'eager' if args.no_compile else 'compiled'}")
    networks = {"fresh": fresh.state_dict(), "trained": trained.state_dict()}
    if args.breakdown:
        kernels = Kernels(compiled=not args.no_compile)
        for name, vae in (("fresh", fresh), ("trained", trained)):
            print(f"# {name} network:")
            breakdown(vae, data[:100], kernels)
    step_data = data[: (args.warmup + args.steps + 2) * 100]
    bounds = {name: make_bound(name, args.samples) for name in ("elbo", "ielbo", "irelbo")}
    rates = {(n, b): [] for n in networks for b in bounds}
    for r in range(args.rounds):
        pairs = list(rates) if r % 2 == 0 else list(rates)[::-1]
        for net, bound in pairs:
            rates[(net, bound)].append(
                lightning_run(bounds[bound], step_data, args, device, weights=networks[net]))
    print(f"{'network':8} {'bound':7} {'ms/step':>8} {'x ELBO (median of rounds, range)':>34}"
          f"  target")
    for net in networks:
        for bound in bounds:
            ms = 1e3 / statistics.median(rates[(net, bound)])
            ratios = [e / b for e, b in zip(rates[(net, "elbo")], rates[(net, bound)],
                                            strict=True)]
            summary = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f} .. "
                       f"{max(ratios):.2f})")
            target = TARGETS.get(bound)
            verdict = ("" if target is None else
                       f"<= {target}: {'met' if statistics.median(ratios) <= target else 'missed'}")
            print(f"{net:8} {bound:7} {ms:8.1f} {summary:>34}  {verdict}", flush=True)
    footer()


if __name__ == "__main__":
    main()
