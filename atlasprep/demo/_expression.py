"""Counts: cell-type programs over a heavy-tailed background, sampled as gamma-Poisson counts.

The model (fixed by ``spec.MODEL_SEED``): every gene has a log-normal background share of a
cell's counts; housekeeping genes a fixed share; each cell type raises its markers, its
lineage's genes and a random program of expressed genes; a donor's disease and sex, and the
dataset (batch effect, nuclei losing mitochondrial and gaining nuclear transcripts) change
the shares further. A cell draws its total counts from its dataset's log-normal depth.

Sampling is vectorised and cut where it is cheapest:
* the ~1,000 "head" genes that carry most counts get one gamma-Poisson (negative binomial)
  draw per cell and gene;
* the ~20,000 "tail" genes, whose expected counts are far below one, are sampled as a
  Poisson number of reads per cell and column tile, each read placed by an alias table.
Counts come out one 2,048-cell tile row at a time, per column tile, i.e. in TileDB's global
order for the X array, so the writer never sorts. Primary cells are generated in fixed
blocks (one tile row each) from ``default_rng([seed, 2, block])``: the result does not
depend on the write batch size, and a duplicate's counts are its original's block, re-made.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.demo import _spec as spec
from atlasprep.demo._catalog import Catalog, catalog, gene_universe
from atlasprep.demo._plan import CellPlan
from atlasprep.demo._schema import X_TILE_EXTENT

__all__ = ["TILE", "Counts", "CountsGenerator", "ExpressionModel", "expression_model"]

TILE = X_TILE_EXTENT
GROUP = 512  # cells per random stream; TILE is a multiple of it
_LEGACY_FIRST_NEW_ID = "ENSG00000270000"  # genes from here on were added after the legacy GENCODE
_N_HEAD_BACKGROUND = 800
_MIN_DEPTH = 200.0

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class AliasTable:
    """Walker's alias method: O(1) draws from a fixed discrete distribution."""

    prob: _F64
    alias: _I64

    @classmethod
    def build(cls, weights: _F64) -> AliasTable:
        n = len(weights)
        total = float(weights.sum())
        scaled = (weights * n / total).tolist() if total > 0 else [1.0] * n
        prob = np.ones(n)
        alias = np.arange(n, dtype=np.int64)
        small = [i for i, p in enumerate(scaled) if p < 1.0]
        large = [i for i, p in enumerate(scaled) if p >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            prob[s], alias[s] = scaled[s], g
            scaled[g] += scaled[s] - 1.0
            (small if scaled[g] < 1.0 else large).append(g)
        return cls(prob=prob, alias=alias)

    def sample(self, rng: np.random.Generator, n: int) -> _I64:
        idx = rng.integers(0, len(self.prob), size=n)
        return np.where(rng.random(n) < self.prob[idx], idx, self.alias[idx])


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpressionModel:
    n_genes: int
    head: _I64  # sorted var positions sampled gene by gene
    head_shape: _F64  # gamma shape (1 / dispersion) per head gene
    head_rate: _F64  # (n_combos, n_head): expected share of a cell's counts
    tail_mass: _F64  # (n_combos,): share of a cell's counts in the tail
    tile_share: _F64  # (n_tiles,): share of the tail in each column tile
    tile_tables: tuple[AliasTable, ...]
    combo: npt.NDArray[np.int32]  # (n_donors, n_cell_types) -> combo row, -1 where none
    fallback: _I64  # (n_combos,): gene given one count in a cell that drew none
    median: _F64  # per dataset
    sigma: _F64
    measured: npt.NDArray[np.bool_]  # (n_datasets incl. the atlas, n_genes)


def _positions(genes: pd.DataFrame) -> dict[str, int]:
    """Symbol -> var position; a symbol on several IDs names the lowest ID."""
    pos: dict[str, int] = {}
    for i, name in enumerate(genes["feature_name"]):
        pos.setdefault(str(name), i)
    return pos


@functools.cache
def expression_model() -> ExpressionModel:
    return _build_model(catalog(), gene_universe())


def _build_model(cat: Catalog, genes: pd.DataFrame) -> ExpressionModel:
    rng = np.random.default_rng(spec.MODEL_SEED)
    n_genes = len(genes)
    pos = _positions(genes)
    names = genes["feature_name"].astype(str)
    biotype = genes["feature_biotype"].to_numpy()

    def at(symbols: tuple[str, ...] | list[str]) -> _I64:
        return np.array([pos[s] for s in symbols], dtype=np.int64)

    ribosomal = np.flatnonzero(names.str.fullmatch(r"RP[LS]\d+[AXY]?\d*") & (biotype == "protein_coding"))
    mito = np.flatnonzero(names.str.startswith("MT-"))
    fixed: dict[int, float] = {int(pos[s]): share for s, share in spec.HOUSEKEEPING.items()}
    fixed.update({int(g): 0.0015 for g in ribosomal if int(g) not in fixed})
    fixed.update({pos[s]: 0.0015 for s in spec.FEMALE_ONLY_GENES})
    fixed.update({pos[s]: 0.0003 for s in spec.MALE_ONLY_GENES})
    program_genes = {
        s for ct in spec.CELL_TYPES.values() for s in (*ct.markers, *spec.LINEAGES[ct.lineage])
    } | {s for genes_ in spec.DISEASE_PROGRAMS.values() for s in genes_}
    named = at(sorted(program_genes))

    # background: log-normal, a quarter of genes barely expressed, lncRNAs and tRNAs lower
    bg = np.exp(rng.normal(0.0, 2.0, n_genes))
    bg[rng.random(n_genes) < 0.25] *= 0.01
    bg[biotype == "lncRNA"] *= 0.3
    bg[biotype == "Mt_tRNA"] *= 0.05
    bg[named] = np.quantile(bg, 0.6)  # markers are specific: moderate elsewhere
    fixed_idx = np.fromiter(fixed, dtype=np.int64)
    bg[fixed_idx] = 0.0
    bg *= (1.0 - sum(fixed.values())) / bg.sum()
    bg[fixed_idx] = np.fromiter(fixed.values(), dtype=np.float64)

    ranked = np.argsort(-bg, kind="stable")
    top = ranked[~np.isin(ranked, np.union1d(named, fixed_idx))][:_N_HEAD_BACKGROUND]
    head = np.unique(np.concatenate([top, named, fixed_idx]))
    in_head = np.full(n_genes, -1, dtype=np.int64)
    in_head[head] = np.arange(len(head))
    tail_bg = bg.copy()
    tail_bg[head] = 0.0
    tail_total = float(tail_bg.sum())
    pool = in_head[top]  # head positions of the plainly expressed genes programs draw from

    # per-cell-type head multipliers and floors (markers, lineage)
    n_types = len(cat.cell_types)
    type_mult = np.ones((n_types, len(head)))
    type_floor = np.zeros((n_types, len(head)))
    for i, term in enumerate(cat.cell_types):
        ct = spec.CELL_TYPES[term]
        up = rng.choice(pool, 60, replace=False)
        type_mult[i, up] *= np.exp(rng.uniform(0.7, 1.8, len(up)))
        down = rng.choice(pool, 30, replace=False)
        type_mult[i, down] *= 0.25
        lineage = in_head[at(spec.LINEAGES[ct.lineage])]
        type_floor[i, lineage] = 0.0015
        markers = in_head[at(ct.markers)]
        levels = 0.003 * np.exp(rng.normal(0.0, 0.5, len(markers)))
        levels[0] = 0.012
        type_floor[i, markers] = np.maximum(type_floor[i, markers], levels)

    # per-dataset effects (batch, nuclei) and legacy annotation gaps
    n_ds = len(cat.datasets)
    ds_mult = np.exp(rng.normal(0.0, 0.2, (n_ds, len(head))))
    measured = np.ones((n_ds + 1, n_genes), dtype=bool)
    ids = genes["feature_id"].to_numpy().astype(str)
    for d, ds in enumerate(cat.datasets):
        if ds.suspension_type == "nucleus":
            ds_mult[d, in_head[mito]] *= 0.03
            ds_mult[d, in_head[ribosomal]] *= 0.4
            ds_mult[d, in_head[at(["MALAT1", "NEAT1"])]] *= 4.0
        if ds.gene_annotation == "legacy":
            new = ids >= _LEGACY_FIRST_NEW_ID
            new[named] = False  # keep every marker measurable in every dataset
            measured[d, new] = False
    source_ds = [[ds.key for ds in cat.datasets].index(s.dataset) for s in spec.ATLAS.sources]
    measured[n_ds] = measured[source_ds].any(axis=0)

    disease_mult = {
        d: (in_head[at(g)], np.exp(rng.uniform(1.1, 2.1, len(g)))) for d, g in spec.DISEASE_PROGRAMS.items()
    }
    female_genes, male_genes = in_head[at(spec.FEMALE_ONLY_GENES)], in_head[at(spec.MALE_ONLY_GENES)]

    # one row per (donor, cell type) the spec can produce
    ct_index = {t: i for i, t in enumerate(cat.cell_types)}
    combo = np.full((len(cat.donors), n_types), -1, dtype=np.int32)
    rows: list[_F64] = []
    for donor_idx, donor in enumerate(cat.donors):
        d = int(cat.donor_dataset[donor_idx])
        for term, _ in cat.datasets[d].composition:
            t = ct_index[term]
            w = np.maximum(bg[head] * type_mult[t], type_floor[t]) * ds_mult[d]
            if donor.disease in disease_mult:
                idx, mult = disease_mult[donor.disease]
                w[idx] *= mult
            w[male_genes if donor.sex == "PATO:0000383" else female_genes] = 0.0
            combo[donor_idx, t] = len(rows)
            rows.append(w)
    weights = np.stack(rows)
    totals = weights.sum(axis=1) + tail_total
    head_rate = weights / totals[:, None]

    dispersion = np.clip(np.exp(rng.normal(np.log(0.3), 0.5, len(head))), 0.05, 3.0)
    starts = range(0, n_genes, TILE)
    tables = tuple(AliasTable.build(tail_bg[s : s + TILE]) for s in starts)
    tile_share = np.array([tail_bg[s : s + TILE].sum() for s in starts]) / tail_total
    return ExpressionModel(
        n_genes=n_genes,
        head=head,
        head_shape=1.0 / dispersion,
        head_rate=head_rate,
        tail_mass=tail_total / totals,
        tile_share=tile_share,
        tile_tables=tables,
        combo=combo,
        fallback=head[np.argmax(head_rate, axis=1)],
        median=np.array([ds.median_counts for ds in cat.datasets]),
        sigma=np.array([ds.counts_sigma for ds in cat.datasets]),
        measured=measured,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """Nonzero counts of ``n_rows`` consecutive cells, in global order (column tile, row, column)."""

    n_rows: int
    rows: _I64  # 0 .. n_rows - 1
    cols: _I64
    data: npt.NDArray[np.float32]  # integer counts, as the Census stores them


# A group's pieces, one per column tile: (rows within the group, columns, counts)
_Pieces = list[tuple[_I64, _I64, npt.NDArray[np.float32]]]


class CountsGenerator:
    """Counts of one plan, one X tile row (2,048 soma_joinids) at a time."""

    def __init__(self, plan: CellPlan, model: ExpressionModel | None = None) -> None:
        self.plan = plan
        self.model = model or expression_model()
        self._cache: dict[int, _Pieces] = {}
        m = self.model
        self._head_slices = [
            slice(*np.searchsorted(m.head, [s, s + TILE])) for s in range(0, m.n_genes, TILE)
        ]

    def tile_row(self, index: int) -> Counts:
        """Counts of soma_joinids ``index * TILE`` up to the next tile row (or the last cell)."""
        plan = self.plan
        start, stop = index * TILE, min((index + 1) * TILE, plan.n_cells)
        # (pieces, source rows to keep or None for all, first output row) in output row order
        parts: list[tuple[_Pieces, _I64 | None, int]] = []
        for g in range(start // GROUP, (min(stop, plan.n_primary) - 1) // GROUP + 1):
            parts.append((self._generate(g), None, g * GROUP - start))
        if stop > plan.n_primary:
            first = max(start, plan.n_primary)
            sources = plan.duplicate_of[first - plan.n_primary : stop - plan.n_primary]
            for g in np.unique(sources // GROUP):
                mine = np.flatnonzero(sources // GROUP == g)
                new_row = np.full(GROUP, -1, dtype=np.int64)
                new_row[sources[mine] - g * GROUP] = mine + (first - start)
                parts.append((self._duplicated_group(int(g)), new_row, 0))
        rows_out, cols_out, data_out = [], [], []
        for t in range(len(self.model.tile_tables)):
            for pieces, new_row, offset in parts:
                rows, cols, data = pieces[t]
                if new_row is None:
                    rows_out.append(rows + offset)
                    cols_out.append(cols)
                    data_out.append(data)
                else:
                    keep = new_row[rows] >= 0
                    rows_out.append(new_row[rows[keep]])
                    cols_out.append(cols[keep])
                    data_out.append(data[keep])
        return Counts(
            n_rows=stop - start,
            rows=np.concatenate(rows_out),
            cols=np.concatenate(cols_out),
            data=np.concatenate(data_out),
        )

    def _duplicated_group(self, g: int) -> _Pieces:
        # Duplicates are written last and re-make their originals' groups (keeping every such group
        # from the first pass would cost memory in proportion to the atlas: GBs at a million
        # cells); consecutive tile rows of duplicates share at most a group at their boundary.
        if g not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[g] = self._generate(g)
        return self._cache[g]

    def _generate(self, g: int) -> _Pieces:
        m, plan = self.model, self.plan
        start, stop = g * GROUP, min((g + 1) * GROUP, plan.n_primary)
        n = stop - start
        rng = np.random.default_rng([plan.seed, 2, g])
        combo = m.combo[plan.donor[start:stop], plan.cell_type[start:stop]]
        ds = plan.dataset[start:stop].astype(np.int64)
        depth = np.maximum(m.median[ds] * np.exp(m.sigma[ds] * rng.standard_normal(n)), _MIN_DEPTH)
        lam = m.head_rate[combo] * depth[:, None]
        lam *= rng.gamma(m.head_shape, 1.0 / m.head_shape, size=lam.shape)
        head_counts = rng.poisson(lam)
        tail_n = rng.poisson((depth * m.tail_mass[combo])[:, None] * m.tile_share[None, :])
        unmeasured = [d for d in np.unique(ds) if not m.measured[d].all()]
        row_base = np.arange(n, dtype=np.int64)
        pieces: _Pieces = []
        nnz = np.zeros(n, dtype=np.int64)
        for t, table in enumerate(m.tile_tables):
            c0, width = t * TILE, len(table.prob)
            per_row = tail_n[:, t]
            keys = np.repeat(row_base * width, per_row) + table.sample(rng, int(per_row.sum()))
            dense = np.bincount(keys, minlength=n * width)
            hs = self._head_slices[t]
            head_keys = (row_base[:, None] * width + (m.head[hs] - c0)[None, :]).ravel()
            dense[head_keys] += head_counts[:, hs].ravel()
            for d in unmeasured:
                lost = np.flatnonzero(~m.measured[d, c0 : c0 + width])
                dense.reshape(n, width)[np.ix_(np.flatnonzero(ds == d), lost)] = 0
            flat = np.flatnonzero(dense != 0)
            rows, cols = np.divmod(flat, width)
            pieces.append((rows, cols + c0, dense[flat].astype(np.float32)))
            nnz += np.bincount(rows, minlength=n)
        for row in np.flatnonzero(nnz == 0):  # every cell needs a count; never seen at these depths
            col = int(m.fallback[combo[row]])
            rows, cols, data = pieces[col // TILE]
            at = int(np.searchsorted(rows, row))
            pieces[col // TILE] = (
                np.insert(rows, at, row),
                np.insert(cols, at, col),
                np.insert(data, at, np.float32(1)),
            )
        return pieces
