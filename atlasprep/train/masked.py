"""Train a tiny masked-gene transformer on a token store, on CPU.

Each step takes a batch from :class:`~atlasprep.loader.ShardLoader` (padded to ``max_len``),
hides 15% of each cell's gene tokens behind ``<mask>`` (never ``<pad>``, ``<cls>``, ``<eos>`` or
context tokens such as ``<tissue_general:lung>``), and trains an ``nn.TransformerEncoder`` to name
the hidden genes: cross-entropy on the masked positions only. Token and position embeddings
only; expression values, when the store has them, are not used. ``sampling`` is the loader's
(``balanced:cell_type@cell_class``: each cell class equally often). The model and a record of the
run (``train.json``: the config, every step's loss) are written to ``out``; a loss that is not
finite stops the run with an error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atlasprep._checks import check_int, invalid
from atlasprep._io import write_json_atomic
from atlasprep.errors import AtlasprepError, UsageError

__all__ = ["MASK_FRACTION", "TrainConfig", "TrainResult", "train_masked_gene"]

MASK_FRACTION = 0.15


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    store: Path
    out: Path | None = None  # model.pt and train.json (None: nothing written)
    split: str = "train"
    steps: int = 100
    batch_size: int = 32
    d_model: int = 64
    layers: int = 2
    max_len: int = 256  # cells padded/truncated to this
    lr: float = 1e-3
    seed: int = 0
    num_workers: int = 0
    sampling: str = "uniform"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "d_model", "layers", "max_len"):
            check_int(name, getattr(self, name), at_least=1)
        check_int("num_workers", self.num_workers, at_least=0)
        check_int("seed", self.seed, at_least=0)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise invalid("lr", self.lr, "must be a positive number")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    losses: tuple[float, ...]
    n_cells: int
    seconds: float
    out: Path | None


def train_masked_gene(
    config: TrainConfig, on_step: Callable[[int, float], None] | None = None
) -> TrainResult:
    """Train (see the module docstring); ``on_step(step, loss)`` after every step."""
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised only without torch
        raise UsageError("train needs torch: pip install 'atlasprep[torch]'") from None
    from atlasprep.loader import ShardDataset, ShardLoader

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    dataset = ShardDataset(config.store, config.split, seed=config.seed, sampling=config.sampling)
    vocab: dict[str, int] = json.loads(dataset.vocab_path.read_text())
    vocab_size = max(vocab.values()) + 1
    mask_id = vocab.get("<mask>", vocab_size)
    vocab_size = max(vocab_size, mask_id + 1)
    special = torch.tensor(sorted({i for t, i in vocab.items() if t.startswith("<") and t.endswith(">")}))
    loader = ShardLoader(
        dataset, batch_size=config.batch_size, num_workers=config.num_workers, pad_to=config.max_len
    )
    model = _model(vocab_size, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    for step, batch in zip(range(1, config.steps + 1), _batches(loader), strict=False):
        inputs, chosen = _mask(batch, special=special, mask_id=mask_id, generator=generator)
        padding = ~batch["attention_mask"]
        padding[:, 0] = False  # an empty cell must not make a row of -inf attention
        loss = torch.nn.functional.cross_entropy(model(inputs, padding)[chosen], batch["input_ids"][chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        if on_step is not None:
            on_step(step, losses[-1])
        if not math.isfinite(losses[-1]):
            raise AtlasprepError(f"the loss is {losses[-1]} at step {step}; lower lr, or check the store")
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), config.out / "model.pt")
        record = {**asdict(config), "store": str(config.store), "out": str(config.out), "losses": losses}
        write_json_atomic(config.out / "train.json", record)
    return TrainResult(
        losses=tuple(losses), n_cells=dataset.num_cells, seconds=time.perf_counter() - started, out=config.out
    )


def _model(vocab_size: int, config: TrainConfig) -> Any:
    import torch
    from torch import nn

    class MaskedGeneModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(vocab_size, config.d_model)
            self.positions = nn.Embedding(config.max_len, config.d_model)
            layer = nn.TransformerEncoderLayer(
                config.d_model, nhead=max(1, config.d_model // 16), dim_feedforward=2 * config.d_model,
                dropout=0.0, batch_first=True,
            )  # fmt: skip
            self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
            self.head = nn.Linear(config.d_model, vocab_size)

        def forward(self, input_ids: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
            where = torch.arange(input_ids.shape[1], device=input_ids.device)
            hidden = self.tokens(input_ids) + self.positions(where)[None]
            return self.head(self.encoder(hidden, src_key_padding_mask=padding))

    return MaskedGeneModel()


def _mask(batch: dict[str, Any], *, special: Any, mask_id: int, generator: Any) -> tuple[Any, Any]:
    """Inputs with 15% of the gene tokens replaced by ``<mask>``, and which positions those are."""
    import torch

    input_ids = batch["input_ids"]
    genes = batch["attention_mask"] & ~torch.isin(input_ids, special)
    chosen = genes & (torch.rand(input_ids.shape, generator=generator) < MASK_FRACTION)
    if not chosen.any() and genes.any():  # a tiny batch may draw nothing: take one gene
        chosen.view(-1)[int(torch.nonzero(genes.view(-1))[0])] = True
    return torch.where(chosen, torch.full_like(input_ids, mask_id), input_ids), chosen


def _batches(loader: Any) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1
