"""Command line for the datasets.

``python -m intvae.data fetch NAME [--root DIR] [--offline]`` fills the cache and says which
source served it. ``python -m intvae.data info NAME [--root DIR] [--offline]`` prints JSON:
per split the number of images, the image shape (C, H, W) and the minimum, maximum and mean
pixel value of ``levels / 255`` (for ``binarized_mnist``: of the grey images before
binarization). Errors are one message on stderr and a non-zero exit status.
"""

import argparse
import json
import logging
import sys

import numpy as np

from intvae.data.cache import cache_path, data_root
from intvae.data.errors import DataError, DataUnavailableError
from intvae.data.fetch import fetch, load_cached, load_levels
from intvae.data.registry import DATASET_NAMES, lookup


def split_summary(levels: np.ndarray) -> dict:
    """Count, shape and value range of one split of uint8 levels, scaled to [0, 1]."""
    return {
        "images": int(levels.shape[0]),
        "image_shape": [1, *map(int, levels.shape[1:])],
        "min": float(levels.min()) / 255.0,
        "max": float(levels.max()) / 255.0,
        "mean": float(levels.mean(dtype=np.float64)) / 255.0,
    }


def dataset_info(name: str, root: str | None = None, offline: bool | None = None) -> dict:
    """What ``info`` prints (fetching the dataset first if needed)."""
    spec, binarized = lookup(name)
    if spec.generate is not None:
        splits, cache, source = load_levels(name), None, "generated"
    else:
        splits, meta = load_cached(name, root, offline=offline)
        cache, source = str(cache_path(spec, data_root(root))), meta["source"]
    return {
        "name": name,
        "description": spec.description,
        "binarized": binarized,
        "levels": 2 if binarized else 256,
        "cache": cache,
        "source": source,
        "splits": {split: split_summary(images) for split, images in splits.items()},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m intvae.data", description="Fetch the image datasets and describe them."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command, summary in (
        ("fetch", "fetch a dataset into the cache"),
        ("info", "print a dataset's splits as JSON"),
    ):
        sub = commands.add_parser(command, help=summary, description=summary)
        sub.add_argument("name", help=f"one of: {', '.join(DATASET_NAMES)}")
        sub.add_argument("--root", help="data directory (default: $INTVAE_DATA_DIR or the cache)")
        sub.add_argument(
            "--offline", action="store_true", default=None, help="skip network sources"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.name not in DATASET_NAMES:
        parser.error(f"unknown dataset {args.name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "info":
            print(json.dumps(dataset_info(args.name, args.root, args.offline), indent=2))
        elif lookup(args.name)[0].generate is not None:
            print(f"{args.name}: generated on the fly, nothing to fetch")
        else:
            result = fetch(args.name, args.root, offline=args.offline)
            served = "already cached" if result.source is None else f"served by {result.source}"
            print(f"{args.name}: {served}: {result.path}")
    except (DataError, DataUnavailableError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
