"""Per-pixel data terms of a trained run, with and without the authors' tolerance.

For the test images x and z at the encoder's mean m(x), prints the distribution of the
per-pixel terms log(P_d / |I_d|) of the normalized IELBO (paper eq. 2 divided by the interval
width 2 delta) and their sum per image, exactly and as the authors' code computed it,
log(P_d / |I_d| + tolerance): the tolerance caps what a badly wrong pixel costs at
log(tolerance) (-16.1 nats for 1e-7), so a run can trade a few hopeless pixels for sharper ones.

    python scripts/pixel_terms.py RUN_DIR [--tolerance 1e-7] [--data-root DIR] [--batches 10]
"""

import argparse
import itertools
import json
import math

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from intvae.app.runs import find_checkpoint, load_checkpoint, load_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--tolerance", type=float, default=1e-7)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batches", type=int, default=10, help="test batches (of the run's size)")
    args = parser.parse_args()
    ckpt, _ = find_checkpoint(args.run)
    checkpoint, config = load_checkpoint(ckpt)
    cfg = OmegaConf.create(config)
    datamodule = instantiate(cfg.data, **({"root": args.data_root} if args.data_root else {}))
    datamodule.setup("test")
    vae = load_vae(checkpoint, cfg, datamodule.num_pixels)
    interval = instantiate(cfg.interval)
    terms = []
    with torch.no_grad():
        for x in itertools.islice(datamodule.test_dataloader(), args.batches):
            likelihood = vae.decode(vae.encode(x).loc)
            lo, hi = interval(x)
            terms.append(likelihood.log_interval_prob(lo, hi) - interval.log_width(x))
    terms = torch.cat(terms).double()
    floor = math.log(args.tolerance)
    print(json.dumps({
        "run": args.run,
        "images": len(terms),
        "fraction_of_pixels_below_log_tolerance": (terms < floor).double().mean().item(),
        "smallest_pixel_term": terms.min().item(),
        "median_pixel_term": terms.median().item(),
        "exact_sum_per_image": terms.sum(-1).mean().item(),
        "with_tolerance_sum_per_image": torch.logaddexp(terms, torch.tensor(floor).double())
        .sum(-1).mean().item(),
    }, indent=2))


if __name__ == "__main__":
    main()
