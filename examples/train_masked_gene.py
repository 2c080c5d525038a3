"""Train a tiny masked-gene transformer on a token store: the loader end to end, on CPU.

    python examples/train_masked_gene.py --store STORE --steps 100 --batch-size 32

The model and its training loop are :func:`atlasprep.train.train_masked_gene` (a recipe's
``[train]`` stage runs the same). Prints the loss of every step and exits with status 1 if a
loss is not finite.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from atlasprep.errors import AtlasprepError
from atlasprep.train import TrainConfig, train_masked_gene


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True, help="a token store (atlasprep tokenize --out)")
    parser.add_argument("--out", type=Path, default=None, help="write model.pt and train.json here")
    parser.add_argument("--split", default="train")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=256, help="cells are padded/truncated to this")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--sampling",
        default="uniform",
        help="uniform (every cell once an epoch), balanced:COLUMN or balanced:COLUMN@LEVEL "
        "(e.g. balanced:cell_type@cell_class: each cell class equally often)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    config = TrainConfig(**vars(parse(argv)))
    try:
        result = train_masked_gene(
            config, on_step=lambda s, v: print(f"step {s:>5}  loss {v:.4f}", flush=True)
        )
    except AtlasprepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{result.n_cells:,} cells in {config.split} ({config.sampling} sampling), {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
