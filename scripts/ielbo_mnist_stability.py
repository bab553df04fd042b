"""Stability check of the IELBO on real continuous MNIST (issue 2, item 7).

Trains the paper's IELBO model (two hidden layers of 200 ELU units, latent 25, 10 samples of z,
delta 0.01, pixels rescaled to [eps, 1 - eps]) with Adam at learning rate 1e-3 and no gradient
clipping, checks every step's loss and gradients for non-finite values, and prints per epoch
the decoder's smallest standard deviation seen in training and the test IELBO (nats per image).
This is a plain PyTorch loop; the Lightning app (``python -m intvae.train``) runs the same model.

    python scripts/ielbo_mnist_stability.py [--epochs 4] [--root DIR]
"""

import argparse
import json
import math
import time

import torch

from intvae.bounds import IELBO
from intvae.data import load_levels
from intvae.intervals import Fixed
from intvae.likelihoods import GaussianHead
from intvae.networks import VAE


def to_unit(levels, eps: float) -> torch.Tensor:
    x = torch.from_numpy(levels).reshape(len(levels), -1).float() / 255.0
    return eps + (1.0 - 2.0 * eps) * x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--delta", type=float, default=0.01)
    parser.add_argument("--eps", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    splits = load_levels("mnist", args.root)
    train, test = to_unit(splits["train"], args.eps), to_unit(splits["test"], args.eps)
    vae = VAE(train.shape[1], GaussianHead(), hidden=[200, 200], latent=25)
    bound = IELBO(Fixed(args.delta), samples=args.samples)
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr)
    step, non_finite = 0, []
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        min_std, train_sum = math.inf, 0.0
        for idx in torch.randperm(len(train)).split(args.batch):
            result = bound(vae, train[idx])
            loss = -result.bound.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads_ok = all(torch.isfinite(p.grad).all() for p in vae.parameters())
            if not (torch.isfinite(loss) and grads_ok):
                what = "loss" if not torch.isfinite(loss) else "gradient"
                non_finite.append({"epoch": epoch, "step": step, "quantity": what})
                print(f"non-finite {what} at epoch {epoch}, step {step}")
            else:
                opt.step()
            min_std = min(min_std, result.likelihood.scale.min().item())
            train_sum += -loss.item() * len(idx)
            step += 1
        with torch.no_grad():
            test_bound = sum(bound(vae, xb).bound.sum().item() for xb in test.split(500))
        print(json.dumps({
            "epoch": epoch,
            "train_ielbo": round(train_sum / len(train), 2),
            "test_ielbo": round(test_bound / len(test), 2),
            "min_decoder_std": min_std,
            "non_finite_steps": len(non_finite),
            "seconds": round(time.time() - start, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
