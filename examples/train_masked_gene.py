"""Train a tiny masked-gene transformer on a token store: the loader end to end, on CPU.

    python examples/train_masked_gene.py --store STORE --steps 100 --batch-size 32

Each step takes a batch from ``atlasprep.loader.ShardLoader`` (padded to ``--max-len``), hides
15% of each cell's gene tokens behind ``<mask>`` (never ``<pad>``, ``<cls>``, ``<eos>`` or
context tokens such as ``<tissue_general:lung>``), and trains an ``nn.TransformerEncoder`` to
name the hidden genes: cross-entropy on the masked positions only. Token and position
embeddings only; expression values, when the store has them, are not used. Prints the loss of
every step and exits with status 1 if a loss is not finite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlasprep.loader import ShardDataset, ShardLoader

MASK_FRACTION = 0.15


class MaskedGeneModel(nn.Module):
    def __init__(self, vocab_size: int, *, d_model: int, layers: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead=max(1, d_model // 16),
            dim_feedforward=2 * d_model,
            dropout=0.0,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        where = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.tokens(input_ids) + self.positions(where)[None]
        return self.head(self.encoder(hidden, src_key_padding_mask=padding))


def mask_genes(
    batch: dict[str, Any], *, special: torch.Tensor, mask_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with 15% of the gene tokens replaced by ``<mask>``, and which positions those are."""
    input_ids: torch.Tensor = batch["input_ids"]
    genes = batch["attention_mask"] & ~torch.isin(input_ids, special)
    chosen = genes & (torch.rand(input_ids.shape, generator=generator) < MASK_FRACTION)
    if not chosen.any() and genes.any():  # a tiny batch may draw nothing: take one gene
        chosen.view(-1)[int(torch.nonzero(genes.view(-1))[0])] = True
    return torch.where(chosen, torch.full_like(input_ids, mask_id), input_ids), chosen


def batches(loader: ShardLoader) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True, help="a token store (atlasprep tokenize --out)")
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
    args = parse(argv)
    torch.manual_seed(args.seed)
    dataset = ShardDataset(args.store, args.split, seed=args.seed, sampling=args.sampling)
    vocab: dict[str, int] = json.loads(dataset.vocab_path.read_text())
    vocab_size = max(vocab.values()) + 1
    mask_id = vocab.get("<mask>", vocab_size)
    vocab_size = max(vocab_size, mask_id + 1)
    special = torch.tensor(sorted({i for t, i in vocab.items() if t.startswith("<") and t.endswith(">")}))
    loader = ShardLoader(
        dataset, batch_size=args.batch_size, num_workers=args.num_workers, pad_to=args.max_len
    )
    model = MaskedGeneModel(vocab_size, d_model=args.d_model, layers=args.layers, max_len=args.max_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"{dataset.num_cells:,} cells in {args.split} ({args.sampling} sampling), "
        f"vocabulary {vocab_size:,}, <mask> = {mask_id}"
    )
    for step, batch in zip(range(1, args.steps + 1), batches(loader), strict=False):
        inputs, chosen = mask_genes(batch, special=special, mask_id=mask_id, generator=generator)
        padding = ~batch["attention_mask"]
        padding[:, 0] = False  # an empty cell must not make a row of -inf attention
        logits = model(inputs, padding)
        loss = nn.functional.cross_entropy(logits[chosen], batch["input_ids"][chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        print(f"step {step:>5}  loss {value:.4f}  masked {int(chosen.sum())}", flush=True)
        if not math.isfinite(value):
            print(f"error: loss is {value} at step {step}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
