"""A peer: the same VAE (ELBO) and IWAE trained by pythae's trainer, against this package.

pythae (clementchadebec/benchmark_VAE, ``pip install pythae``) is not a dependency of intvae:
run this script with a Python that has both, e.g. a virtual environment that reuses the
installed torch, Lightning and intvae:

    python -m venv --system-site-packages /tmp/pythae-venv
    /tmp/pythae-venv/bin/pip install pythae           # 0.1.2 from PyPI
    /tmp/pythae-venv/bin/python benchmarks/peer_pythae.py [--steps 20] [--rounds 5]
        [--device cpu|cuda] [--threads 1] [--samples 5]

Same architecture on both sides: encoder 784-200-200-(2 x 25), decoder 25-200-200-(2 x 784),
ELU, Xavier weights and biases 0.1 (``intvae.networks.mlp``), batch 100, Adam at lr 3e-4, the
same MNIST training images (synthetic without the cache). What differs is each library's own
choice: pythae's VAE and IWAE take the sigmoid of the decoder's first 784 outputs as the mean of
a Gaussian with unit variance (its "mse" loss; the other 784 outputs are computed and unused),
while intvae's Gaussian decoder learns the standard deviation from them; intvae clips gradients
by norm 3 (its default) and pythae does not clip. "pythae": ``BaseTrainer.train()`` for one
epoch (its DataLoader over a ``BaseDataset``, its progress bar and its per-step loss read);
"intvae": ``VAEModule`` in a Lightning ``Trainer`` as ``benchmarks/training.py`` runs it. The
ELBO uses one sample of z on both sides (pythae's VAE draws one); the IWAE ``--samples``.
Steps per second are timed between the ends of step ``warmup`` and ``warmup + steps`` in
interleaved rounds; the ratio is the median of the per-round ratios intvae / pythae.
"""

import argparse
import contextlib
import io
import logging
import tempfile

import torch
from common import (
    StepClock,
    add_common_arguments,
    footer,
    header,
    images,
    interleaved,
    median,
    ratio_summary,
    setup,
)
from training import lightning_run

from intvae.bounds import ELBO, IWAE
from intvae.networks import mlp

try:
    from pythae.data.datasets import BaseDataset
    from pythae.models import IWAE as PythaeIWAE
    from pythae.models import VAE as PythaeVAE
    from pythae.models import IWAEConfig, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback
except ImportError as error:  # pragma: no cover - a message, not a traceback
    raise SystemExit(f"pythae is not importable ({error}): see this file's docstring") from error

LR = 3e-4
LATENT = 25


class Encoder(BaseEncoder):
    def __init__(self):
        super().__init__()
        self.net = mlp([784, 200, 200, 2 * LATENT], "elu", 0.1)

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return ModelOutput(embedding=loc, log_covariance=2.0 * log_scale)


class Decoder(BaseDecoder):
    def __init__(self):
        super().__init__()
        self.net = mlp([LATENT, 200, 200, 2 * 784], "elu", 0.1)

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)[..., :784]))


class _Clock(TrainingCallback):
    def __init__(self, clock: StepClock):
        self.clock, self.step = clock, 0

    def on_train_step_end(self, training_config, **kwargs):
        self.step += 1
        self.clock.tick(self.step)


def pythae_run(model_name: str, data: torch.Tensor, args, device: torch.device) -> float:
    """Steps per second of pythae's ``BaseTrainer`` over one epoch of ``data``."""
    torch.manual_seed(0)
    if model_name == "elbo":
        model = PythaeVAE(VAEConfig(input_dim=(784,), latent_dim=LATENT,
                                    reconstruction_loss="mse"), Encoder(), Decoder())
    else:
        config = IWAEConfig(input_dim=(784,), latent_dim=LATENT, reconstruction_loss="mse",
                            n_samples=args.samples)
        model = PythaeIWAE(config, Encoder(), Decoder())
    clock = StepClock(args.warmup, args.steps, device)
    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(output_dir=out, num_epochs=1, learning_rate=LR,
                                   per_device_train_batch_size=100, optimizer_cls="Adam",
                                   no_cuda=device.type != "cuda", steps_saving=None)
        dataset = BaseDataset(data.cpu(), torch.zeros(len(data)))
        trainer = BaseTrainer(model, dataset, training_config=config, callbacks=[_Clock(clock)])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer.train()
    return clock.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5, help="K of the IWAE")
    args = parser.parse_args()
    args.batch = 100
    device = setup(args)
    logging.getLogger("pythae").setLevel(logging.ERROR)
    data, what = images((args.warmup + args.steps + 2) * args.batch)
    from importlib.metadata import version

    header(f"peer: pythae {version('pythae')} BaseTrainer vs intvae VAEModule (Lightning)",
           args)
    print(f"# data: {what}, {tuple(data.shape)}; batch 100; IWAE K = {args.samples}")
    print(f"{'model':18} {'pythae steps/s':>15} {'intvae steps/s':>15} {'intvae/pythae':>36}")
    for name, bound in (("elbo", ELBO(1)), ("iwae", IWAE(args.samples))):
        ours_args = argparse.Namespace(**{**vars(args), "samples": bound.samples})
        rates = interleaved({
            "pythae": lambda n=name: pythae_run(n, data, args, device),
            "intvae": lambda b=bound, a=ours_args: lightning_run(b, data.to(device), a, device),
        }, args.rounds)
        label = "elbo (1 sample)" if name == "elbo" else f"iwae (K={args.samples})"
        print(f"{label:18} {median(rates['pythae']):15.2f} {median(rates['intvae']):15.2f} "
              f"{ratio_summary(rates['intvae'], rates['pythae']):>36}", flush=True)
    footer()


if __name__ == "__main__":
    main()
