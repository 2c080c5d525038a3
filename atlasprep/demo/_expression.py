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
Counts come out one 2,048-cell X tile row at a time, column tile by column tile, i.e. in
TileDB's global order, so the writer never sorts. Primary cells are generated in fixed groups
of 512 from ``default_rng([seed, 2, group])``: the result does not depend on the write batch
size, and a duplicate's counts are its original's group, generated again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.demo import _spec as spec
from atlasprep.demo._catalog import Catalog, catalog, gene_universe
from atlasprep.demo._datasets import ATLAS
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


@dataclass(frozen=True, slots=True, kw_only=True)
class _Genes:
    """Var positions of the gene groups the model treats specially."""

    ids: npt.NDArray[np.str_]
    biotype: npt.NDArray[np.object_]
    position: dict[str, int]  # symbol -> position; a symbol on several IDs names the lowest ID
    ribosomal: _I64
    mito: _I64
    named: _I64  # markers, lineage and disease genes: specific, so moderate in the background
    fixed: dict[int, float]  # position -> fixed share of every cell's counts

    def at(self, symbols: tuple[str, ...] | list[str]) -> _I64:
        return np.array([self.position[s] for s in symbols], dtype=np.int64)

    @classmethod
    def of(cls, genes: pd.DataFrame) -> _Genes:
        names = genes["feature_name"].astype(str)
        biotype = genes["feature_biotype"].to_numpy()
        position: dict[str, int] = {}
        for i, name in enumerate(names):
            position.setdefault(name, i)
        ribosomal = np.flatnonzero(names.str.fullmatch(r"RP[LS]\d+[AXY]?\d*") & (biotype == "protein_coding"))
        fixed = {position[s]: share for s, share in spec.HOUSEKEEPING.items()}
        fixed |= {int(g): 0.0015 for g in ribosomal if int(g) not in fixed}
        fixed |= {position[s]: 0.0015 for s in spec.FEMALE_ONLY_GENES}
        fixed |= {position[s]: 0.0003 for s in spec.MALE_ONLY_GENES}
        named = {s for ct in spec.CELL_TYPES.values() for s in (*ct.markers, *spec.LINEAGES[ct.lineage])}
        named |= {s for program in spec.DISEASE_PROGRAMS.values() for s in program}
        return cls(
            ids=genes["feature_id"].to_numpy().astype(str),
            biotype=biotype,
            position=position,
            ribosomal=ribosomal,
            mito=np.flatnonzero(names.str.startswith("MT-")),
            named=np.array([position[s] for s in sorted(named)], dtype=np.int64),
            fixed=fixed,
        )


@functools.cache
def expression_model() -> ExpressionModel:
    return _build_model(catalog(), _Genes.of(gene_universe()))


def _background(rng: np.random.Generator, genes: _Genes) -> _F64:
    """Every gene's share of a cell's counts before cell type, donor and dataset effects."""
    n = len(genes.ids)
    bg = np.exp(rng.normal(0.0, 2.0, n))  # heavy-tailed, like real gene means
    bg[rng.random(n) < 0.25] *= 0.01  # a quarter of genes barely expressed anywhere
    bg[genes.biotype == "lncRNA"] *= 0.3
    bg[genes.biotype == "Mt_tRNA"] *= 0.05
    bg[genes.named] = np.quantile(bg, 0.6)
    fixed = np.fromiter(genes.fixed, dtype=np.int64)
    bg[fixed] = 0.0
    bg *= (1.0 - sum(genes.fixed.values())) / bg.sum()
    bg[fixed] = np.fromiter(genes.fixed.values(), dtype=np.float64)
    return bg


def _cell_type_effects(
    rng: np.random.Generator, cat: Catalog, genes: _Genes, in_head: _I64, pool: _I64
) -> tuple[_F64, _F64]:
    """Per cell type and head gene: a multiplier (its program) and a floor (markers, lineage)."""
    n_head = int(in_head.max()) + 1
    mult = np.ones((len(cat.cell_types), n_head))
    floor = np.zeros((len(cat.cell_types), n_head))
    for i, term in enumerate(cat.cell_types):
        ct = spec.CELL_TYPES[term]
        up = rng.choice(pool, 60, replace=False)
        mult[i, up] *= np.exp(rng.uniform(0.7, 1.8, len(up)))
        mult[i, rng.choice(pool, 30, replace=False)] *= 0.25
        floor[i, in_head[genes.at(spec.LINEAGES[ct.lineage])]] = 0.0015
        markers = in_head[genes.at(ct.markers)]
        levels = 0.003 * np.exp(rng.normal(0.0, 0.5, len(markers)))
        levels[0] = 0.012  # the first marker is the type's strongest
        floor[i, markers] = np.maximum(floor[i, markers], levels)
    return mult, floor


def _dataset_effects(
    rng: np.random.Generator, cat: Catalog, genes: _Genes, in_head: _I64
) -> tuple[_F64, npt.NDArray[np.bool_]]:
    """Per dataset: head-gene multipliers (batch effect, nuclei) and the genes it measures."""
    n_ds, n_head = len(cat.datasets), int(in_head.max()) + 1
    mult = np.exp(rng.normal(0.0, 0.2, (n_ds, n_head)))
    measured = np.ones((n_ds + 1, len(genes.ids)), dtype=bool)  # the atlas last
    for d, ds in enumerate(cat.datasets):
        if ds.suspension_type == "nucleus":  # nuclei: few mitochondrial, more nuclear transcripts
            mult[d, in_head[genes.mito]] *= 0.03
            mult[d, in_head[genes.ribosomal]] *= 0.4
            mult[d, in_head[genes.at(["MALAT1", "NEAT1"])]] *= 4.0
        if ds.gene_annotation == "legacy":
            new = genes.ids >= _LEGACY_FIRST_NEW_ID
            new[genes.named] = False  # keep every marker measurable in every dataset
            measured[d, new] = False
    keys = [ds.key for ds in cat.datasets]
    measured[n_ds] = measured[[keys.index(s.dataset) for s in ATLAS.sources]].any(axis=0)
    return mult, measured


def _build_model(cat: Catalog, genes: _Genes) -> ExpressionModel:
    rng = np.random.default_rng(spec.MODEL_SEED)
    n_genes = len(genes.ids)
    bg = _background(rng, genes)
    fixed = np.fromiter(genes.fixed, dtype=np.int64)
    ranked = np.argsort(-bg, kind="stable")
    top = ranked[~np.isin(ranked, np.union1d(genes.named, fixed))][:_N_HEAD_BACKGROUND]
    head = np.unique(np.concatenate([top, genes.named, fixed]))
    in_head = np.full(n_genes, -1, dtype=np.int64)
    in_head[head] = np.arange(len(head))
    tail_bg = bg.copy()
    tail_bg[head] = 0.0
    tail_total = float(tail_bg.sum())

    type_mult, type_floor = _cell_type_effects(rng, cat, genes, in_head, pool=in_head[top])
    ds_mult, measured = _dataset_effects(rng, cat, genes, in_head)
    disease = {
        d: (in_head[genes.at(g)], np.exp(rng.uniform(1.1, 2.1, len(g))))
        for d, g in spec.DISEASE_PROGRAMS.items()
    }
    female_only = in_head[genes.at(spec.FEMALE_ONLY_GENES)]
    male_only = in_head[genes.at(spec.MALE_ONLY_GENES)]

    # one row of head-gene weights per (donor, cell type) the spec can produce
    ct_index = {t: i for i, t in enumerate(cat.cell_types)}
    combo = np.full((len(cat.donors), len(cat.cell_types)), -1, dtype=np.int32)
    rows: list[_F64] = []
    for donor_idx, donor in enumerate(cat.donors):
        d = int(cat.donor_dataset[donor_idx])
        for term, _ in cat.datasets[d].composition:
            t = ct_index[term]
            w = np.maximum(bg[head] * type_mult[t], type_floor[t]) * ds_mult[d]
            if donor.disease in disease:
                idx, mult = disease[donor.disease]
                w[idx] *= mult
            w[male_only if donor.sex == "PATO:0000383" else female_only] = 0.0
            combo[donor_idx, t] = len(rows)
            rows.append(w)
    weights = np.stack(rows)
    totals = weights.sum(axis=1) + tail_total
    head_rate = weights / totals[:, None]

    dispersion = np.clip(np.exp(rng.normal(np.log(0.3), 0.5, len(head))), 0.05, 3.0)
    starts = range(0, n_genes, TILE)
    return ExpressionModel(
        n_genes=n_genes,
        head=head,
        head_shape=1.0 / dispersion,
        head_rate=head_rate,
        tail_mass=tail_total / totals,
        tile_share=np.array([tail_bg[s : s + TILE].sum() for s in starts]) / tail_total,
        tile_tables=tuple(AliasTable.build(tail_bg[s : s + TILE]) for s in starts),
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
                remap = np.full(GROUP, -1, dtype=np.int64)
                remap[sources[mine] - g * GROUP] = mine + (first - start)
                parts.append((self._duplicated_group(int(g)), remap, 0))
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
