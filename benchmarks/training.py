"""Training throughput: the package's training step against a bare PyTorch loop.

    python benchmarks/training.py [--bounds elbo ielbo irelbo] [--steps 30] [--warmup 5]
        [--rounds 5] [--batch 100] [--samples 10] [--threads 1] [--device cpu|cuda]
        [--no-compile]

"Package": ``intvae.app.module.VAEModule`` in a Lightning ``Trainer`` as ``python -m
intvae.train`` builds it (``conf/trainer/default.yaml``: precision 32-true, gradient clipping
by norm 3, the CSV logger, the per-epoch metrics with their per-step updates, the progress bar
(its output discarded) and the ``NonFiniteGuard`` in skip mode), fed by ``IndexBatches`` as
the data module does.
"Bare": a plain loop written here for the identical model, bound, batch size, number of
samples, data tensor, Adam (lr 3e-4, fused, as ``VAEModule`` builds it) and clipping by norm 3.
Both start from the same weights each round. Steps per second are timed between the start of
step ``warmup`` and the start of step ``warmup + steps`` (startup, compilation and warm-up
excluded; everything a step does included), in interleaved rounds; the ratio is the median of
the per-round ratios package / bare (target: at least 0.9). ``--compile-step`` adds
``VAEModule(compile_step=True)``, whose whole bound runs through ``torch.compile`` (its
compilation happens in the warm-up steps, which are not timed).
"""

import argparse
import contextlib
import io
import tempfile
from functools import partial

import lightning as L
import torch
from common import (
    MNIST_TRAIN_IMAGES,
    StepClock,
    add_common_arguments,
    footer,
    header,
    images,
    interleaved,
    median,
    paper_vae,
    ratio_summary,
    setup,
)
from lightning.pytorch.loggers import CSVLogger

from intvae.app.callbacks import NonFiniteGuard
from intvae.app.module import VAEModule
from intvae.bounds import ELBO, IELBO, IRELBO, IWAE
from intvae.data import IndexBatches
from intvae.intervals import Fixed

LR = 3e-4
CLIP = 3.0


def make_bound(name: str, samples: int):
    interval = Fixed(0.01)
    return {"elbo": lambda: ELBO(samples), "ielbo": lambda: IELBO(interval, samples),
            "irelbo": lambda: IRELBO(interval, 2.0, samples),
            "iwae": lambda: IWAE(samples)}[name]()


def network(args, device, weights=None):
    """The paper's network: fresh (seed 0), or with ``weights`` (a state dict) loaded."""
    vae = paper_vae(compiled=not args.no_compile)
    if weights is not None:
        vae.load_state_dict(weights)
    return vae.to(device)


def bare_loop(bound, data, args, device, weights=None) -> float:
    """Steps per second of a plain PyTorch loop."""
    vae = network(args, device, weights)
    optimizer = torch.optim.Adam(vae.parameters(), lr=LR, fused=True)
    clock = StepClock(args.warmup, args.steps, device)
    batches = IndexBatches(data, args.batch, train=True, seed=0)
    for i, x in enumerate(batches):
        clock.tick(i)
        if i == args.warmup + args.steps:
            break
        loss = -bound(vae, x).bound.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), CLIP)
        optimizer.step()
    return clock.rate


class _Clock(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.tick(batch_idx)


def lightning_run(bound, data, args, device, compile_step: bool = False, weights=None) -> float:
    """Steps per second of ``VAEModule`` in a ``Trainer`` with the app's settings."""
    clock = StepClock(args.warmup, args.steps, device)
    module = VAEModule(network(args, device, weights), bound,
                       partial(torch.optim.Adam, lr=LR),
                       {"bound": bound.name, "samples": args.samples},
                       compile_step=compile_step)
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(
            default_root_dir=out, accelerator=device.type, devices=1, precision="32-true",
            max_steps=args.warmup + args.steps + 1, gradient_clip_val=CLIP,
            gradient_clip_algorithm="norm", log_every_n_steps=50, num_sanity_val_steps=0,
            limit_val_batches=0, enable_checkpointing=False, enable_model_summary=False,
            logger=CSVLogger(out), callbacks=[NonFiniteGuard("skip"), _Clock(clock)],
            inference_mode=False)
        batches = IndexBatches(data, args.batch, train=True, seed=0)
        with contextlib.redirect_stdout(io.StringIO()):  # the progress bar runs, unseen
            trainer.fit(module, train_dataloaders=batches)
    return clock.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--bounds", nargs="+", default=["elbo", "ielbo", "irelbo"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true",
                        help="eager interval kernels (the app's compile: false)")
    parser.add_argument("--compile-step", action="store_true",
                        help="also time VAEModule(compile_step=True): the whole bound compiled")
    args = parser.parse_args()
    device = setup(args)
    data, what = images((args.warmup + args.steps + 2) * args.batch)
    data = data.to(device)
    header("training throughput: VAEModule in a Lightning Trainer vs a bare PyTorch loop", args)
    print(f"# data: {what}, {tuple(data.shape)}; batch {args.batch}, {args.samples} samples, "
          f"kernels {'eager' if args.no_compile else 'compiled'}")
    extra = (f" {'compiled step/s':>16} {'compiled/bare':>36}" if args.compile_step else "")
    print(f"{'bound':8} {'bare steps/s':>13} {'package steps/s':>16} {'package/bare':>36} "
          f"{'s/epoch (pkg)':>14}{extra}")
    for name in args.bounds:
        bound = make_bound(name, args.samples)
        bare_loop(bound, data, argparse.Namespace(**{**vars(args), "steps": 2, "warmup": 1}),
                  device)  # compile the kernels before timing
        variants = {"bare": lambda b=bound: bare_loop(b, data, args, device),
                    "package": lambda b=bound: lightning_run(b, data, args, device)}
        if args.compile_step:
            variants["compiled"] = lambda b=bound: lightning_run(b, data, args, device, True)
        rates = interleaved(variants, args.rounds)
        epoch = MNIST_TRAIN_IMAGES / args.batch / median(rates["package"])
        extra = (f" {median(rates['compiled']):16.2f} "
                 f"{ratio_summary(rates['compiled'], rates['bare']):>36}"
                 if args.compile_step else "")
        print(f"{name:8} {median(rates['bare']):13.2f} {median(rates['package']):16.2f} "
              f"{ratio_summary(rates['package'], rates['bare']):>36} {epoch:14.1f}{extra}",
              flush=True)
    footer()


if __name__ == "__main__":
    main()
