"""`harmonize`: any AnnData file into CELLxGENE terms and Ensembl genes, streamed, with a report.

obs is mapped value by value (``labels``), var gene by gene (``genes``); X is then streamed
batch by batch through the column mapping (genes that name one Ensembl ID are summed; unmapped
genes leave) into the output, written under a temporary name and renamed (``AnnDataWriter``).
Nothing is dropped or guessed silently: every value and gene that stays unmapped is in the
report, with its cell or gene counts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from atlasprep import __version__
from atlasprep._io import atomic_output, write_json_atomic
from atlasprep.errors import EmptyResultError, IncompleteMappingError, InputFormatError, UsageError
from atlasprep.harmonize._carry import Carried, carried_from
from atlasprep.harmonize._embedding import compute_embedding
from atlasprep.harmonize._organism import infer_organism
from atlasprep.harmonize._schema_rules import DEPRECATED_OBS, ORGANISM_OBS, RESERVED_OBS, RESERVED_VAR
from atlasprep.harmonize._schema_values import SCHEMA_VALUES, map_schema_values
from atlasprep.harmonize._term_rules import TERM_RULES, verdict
from atlasprep.harmonize.config import ORGANISM_FIELD, PLAIN_FIELDS, HarmonizeConfig, check_config
from atlasprep.harmonize.genes import GeneMapping, id_column, map_genes
from atlasprep.harmonize.labels import (
    ORGANISM_TERMS,
    TERM_FIELDS,
    LabelMapping,
    load_mapping_table,
    map_values,
    value_counts,
)
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions, term_label, tissue_general
from atlasprep.provenance import PROVENANCE_KEY, file_input, hash_ahead, new_step, read_steps, steps_json
from atlasprep.slice.writer import AnnDataWriter
from atlasprep.sources import ProgressCallback
from atlasprep.sources.anndata import AnnDataSource
from atlasprep.sources.counts import check_counts, counts_where
from atlasprep.sources.spec import open_source, select

__all__ = ["PLAIN_FIELDS", "HarmonizeConfig", "HarmonizeReport", "harmonize"]

log = logging.getLogger("atlasprep.harmonize")


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldReport:
    field: str
    source: str  # the source column, or "--set"
    mappings: tuple[LabelMapping, ...]

    @property
    def unmapped(self) -> tuple[LabelMapping, ...]:
        return tuple(m for m in self.mappings if m.term_id is None)

    def to_json(self) -> dict[str, Any]:
        mapped = [m for m in self.mappings if m.term_id is not None]
        by_how: dict[str, int] = {}
        for m in mapped:
            by_how[str(m.how)] = by_how.get(str(m.how), 0) + 1
        return {
            "field": self.field,
            "source": self.source,
            "n_values": len(self.mappings),
            "n_mapped": len(mapped),
            "n_unmapped": len(self.unmapped),
            "cells_unmapped": sum(m.n_cells for m in self.unmapped),
            "by_how": by_how,
            "mapped": [m.to_json() for m in mapped],
            "unmapped": [m.to_json() for m in self.unmapped],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HarmonizeReport:
    input: str
    out: str
    n_cells: int
    organism: str
    fields: tuple[FieldReport, ...]
    genes: GeneMapping
    raw_counts: dict[str, Any]
    versions: dict[str, Any]
    seconds: float

    @property
    def n_unmapped(self) -> int:
        """Values (over all fields) and genes that stayed unmapped."""
        return sum(len(f.unmapped) for f in self.fields) + len(self.genes.unknown) + len(self.genes.ambiguous)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "out": self.out,
            "n_cells": self.n_cells,
            "organism": self.organism,
            "fields": {f.field: f.to_json() for f in self.fields},
            "genes": self.genes.to_json(examples=None),  # every unknown, ambiguous and summed gene
            "raw_counts": self.raw_counts,
            "versions": self.versions,
            "seconds": round(self.seconds, 3),
        }


def harmonize(config: HarmonizeConfig, progress: ProgressCallback | None = None) -> HarmonizeReport:
    started = time.perf_counter()
    maps, sets = check_config(config)
    source = open_source(config.source)
    assert isinstance(source, AnnDataSource)  # one_input: the config names one AnnData file
    hash_ahead([config.input])  # the provenance record's digest, while the cells are mapped
    try:
        positions = select(config.source, source).positions
        if len(positions) == 0:  # (as slice refuses an empty result)
            raise EmptyResultError(
                f"{config.input}: no cell to harmonize (the file holds none, or the selection left none)"
            )
        obs = source.obs_values(positions, list(source.obs_columns))
        var = source.var()
        names = _gene_names(var, config.gene_column)
        organism = infer_organism(config.organism or sets.get(ORGANISM_FIELD), config.input, obs, var, names)
        if config.gene_column is None:
            names = id_column(var, organism) or names
        table = load_mapping_table(config.mapping) if config.mapping else {}
        fields, columns = _map_obs(obs, maps, sets, organism, table, keep_labels=config.keep_labels)
        genes = map_genes(names, organism)
        if len(genes.var) == 0:
            raise InputFormatError(
                f"{config.input}: no gene maps to a {genes.annotation} Ensembl ID; "
                "check gene_column (symbols or IDs?) and organism"
            )
        report = HarmonizeReport(
            input=str(config.input),
            out=str(config.out),
            n_cells=len(obs),
            organism=organism,
            fields=tuple(fields),
            genes=genes,
            raw_counts={},
            versions={
                "atlasprep": __version__,
                "cellxgene_schema": SCHEMA_VERSION,
                "ontologies": ontology_versions(),
                "genes": genes.annotation,
            },
            seconds=0.0,
        )
        if config.strict and report.n_unmapped:
            _write_report(config, report)
            raise IncompleteMappingError(
                f"strict: {report.n_unmapped} values or genes stayed unmapped"
                + (f" (listed in {config.report})" if config.report else "; set report to list them")
                + "; add them to a mapping table, or turn strict off"
            )
        return _stream(
            config, source, positions, _new_obs(obs, columns), genes, report, progress, started=started
        )
    finally:
        source.close()


def _write_report(config: HarmonizeConfig, report: HarmonizeReport) -> None:
    if config.report is not None:
        write_json_atomic(config.report, report.to_json(), sort_keys=False)


@contextlib.contextmanager
def _report_output(config: HarmonizeConfig, report: HarmonizeReport) -> Iterator[None]:
    """Write the report under a temporary name for the block (that renames the output into place),
    then rename it too: a report that cannot be written leaves no output, and no report is left by
    an output that failed."""
    if config.report is None:
        yield
        return
    with atomic_output(config.report, hidden=True) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        yield


def _gene_names(var: pd.DataFrame, column: str | None) -> list[str]:
    if column is None:
        return [str(g) for g in var.index]
    if column not in var.columns:
        raise UsageError(f"gene_column = {column!r}: not a var column (var has: {', '.join(var.columns)})")
    return [str(g) for g in var[column]]


def _map_obs(
    obs: pd.DataFrame,
    maps: Mapping[str, str],
    sets: Mapping[str, str],
    organism: str,
    table: Mapping[tuple[str, str], str],
    *,
    keep_labels: bool,
) -> tuple[list[FieldReport], dict[str, pd.Series]]:
    """Each requested field's report and its new obs columns (the ID; its label only with
    ``keep_labels``: CELLxGENE writes the labels on upload and rejects files that carry them)."""
    reports: list[FieldReport] = []
    columns: dict[str, pd.Series] = {}
    n = len(obs)
    for field, column in maps.items():
        if column not in obs.columns:
            raise UsageError(f"maps {column}={field}: obs has no column {column!r}")

    def given(field: str) -> tuple[pd.Series, str] | None:
        """The field's values and where they come from (a source column, or ``--set``)."""
        if field in maps:
            return obs[maps[field]].astype("string").fillna(""), maps[field]
        if field in sets:
            return pd.Series([sets[field]] * n, dtype="string"), "--set"
        return None

    def own(field: str, source: str) -> dict[str, str]:
        return {value: tid for (col, value), tid in table.items() if col in (source, field)}

    literal_reports, literal_columns = [], {}
    for field in SCHEMA_VALUES:  # first: tissue_type decides what tissue and cell_type may be
        found = given(field)
        if found is not None:
            values, source = found
            literals = map_schema_values(
                field, value_counts(values), own(field, source), given=source == "--set"
            )
            literal_reports.append(FieldReport(field=field, source=source, mappings=tuple(literals)))
            literal_columns[field] = values.map({m.value: m.term_id for m in literals}).astype("string")
    kinds = {m.term_id for r in literal_reports if r.field == "tissue_type" for m in r.mappings if m.term_id}
    tissue_type = kinds.pop() if len(kinds) == 1 else "tissue"  # (several: each checked as tissue)
    for field in (*TERM_FIELDS, *PLAIN_FIELDS):
        found = given(field)
        if found is None:
            continue
        if field in literal_columns:  # (mapped above; its column in its place among the others)
            columns[field] = literal_columns[field]
            continue
        values, source = found
        if field in PLAIN_FIELDS:
            columns[field] = _plain(field, values)
            continue
        mappings = map_values(
            field, value_counts(values), organism=organism, table=own(field, source), tissue_type=tissue_type
        )
        if source == "--set":
            mappings = [m if m.how in (None, "table") else _as_set(m) for m in mappings]
        reports.append(FieldReport(field=field, source=source, mappings=tuple(mappings)))
        ids = {m.value: m.term_id for m in mappings}
        labels = {m.value: m.label for m in mappings}
        columns[f"{field}_ontology_term_id"] = values.map(ids).astype("string")
        if keep_labels:
            columns[field] = values.map(labels).astype("string")
        if field == "tissue":
            present = [t for t in ids.values() if t and t not in ("unknown", "na")]
            rollup = tissue_general(present)
            general = columns["tissue_ontology_term_id"].map(rollup).astype("string")
            columns["tissue_general_ontology_term_id"] = general
            columns["tissue_general"] = general.map(_labels(rollup.values())).astype("string")
    _check_kept(obs, maps, sets, organism, tissue_type)
    return [*reports, *literal_reports], columns


def _check_kept(
    obs: pd.DataFrame, maps: Mapping[str, str], sets: Mapping[str, str], organism: str, tissue_type: str
) -> None:
    """Warn of the ID columns the input already has and harmonize keeps as they are (their field
    neither mapped nor set) where they hold values the schema does not allow there."""
    for field in TERM_FIELDS:
        column = f"{field}_ontology_term_id"
        if field in maps or field in sets or column not in obs.columns:
            continue
        rule = TERM_RULES[column](tissue_type, ORGANISM_TERMS[organism])
        counts = value_counts(obs[column])
        bad = {v: n for v, n in counts.items() if v and verdict(v, rule) is not None}
        if bad:
            value = next(iter(bad))
            log.warning(
                "obs column %s, kept as it is: %d cell(s) hold %d value(s) the schema does not allow "
                "(%s: %s); map it (--map %s=%s) to have it checked and fixed",
                column,
                sum(bad.values()),
                len(bad),
                value,
                verdict(value, rule),
                column,
                field,
            )


def _as_set(mapping: LabelMapping) -> LabelMapping:
    return replace(mapping, how="set") if mapping.how in ("id", "label") else mapping


def _labels(term_ids: Any) -> dict[str, str]:
    return {t: term_label(t) for t in set(term_ids)}


def _plain(field: str, values: pd.Series) -> pd.Series:
    if field != "is_primary_data":
        return values
    truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    mapped = values.str.strip().str.lower().map(truth)
    bad = sorted(set(values[mapped.isna()].tolist()))
    if bad:
        raise UsageError(f"is_primary_data: {', '.join(map(repr, bad[:5]))} is not true or false")
    return mapped.astype(bool)


def _new_obs(obs: pd.DataFrame, columns: Mapping[str, pd.Series]) -> pd.DataFrame:
    """The input's obs with the harmonized columns; a source column whose name a harmonized
    column takes, or that the schema reserves or deprecates, keeps its values as ``<name>_original``."""
    out = obs.copy()
    taken = {*columns, *RESERVED_OBS, *DEPRECATED_OBS, *ORGANISM_OBS}
    out = out.rename(columns={name: f"{name}_original" for name in out.columns if name in taken})
    for name, column in columns.items():
        out[name] = column.to_numpy()
    return out


def _output_var(var: pd.DataFrame, *, keep_labels: bool) -> pd.DataFrame:
    """The genes as written: feature_is_filtered (False: X keeps every gene it has), and the
    reserved gene columns only with keep_labels."""
    out = var.copy() if keep_labels else var.drop(columns=[c for c in RESERVED_VAR if c in var.columns])
    out["feature_is_filtered"] = np.zeros(len(out), dtype=bool)
    return out


def _stream(
    config: HarmonizeConfig,
    source: AnnDataSource,
    positions: np.ndarray,
    obs: pd.DataFrame,
    genes: GeneMapping,
    report: HarmonizeReport,
    progress: ProgressCallback | None,
    *,
    started: float,
) -> HarmonizeReport:
    """X of the cells at ``positions`` through the gene mapping into the output, batch by batch,
    then the report beside it; returns the report with the counts check. Negative or non-finite
    counts are refused."""
    n = len(positions)
    where = counts_where(source.info)
    # the input's counts are checked here, before the gene sums: the writer need not again
    var = _output_var(genes.var, keep_labels=config.keep_labels)
    writer = AnnDataWriter(config.out, var=var, overwrite=config.overwrite, counts=None)
    kept: list[sp.csr_matrix] = []  # the counts, when an embedding is computed from them
    non_integer = 0
    try:
        done = 0
        batches = source.iter_batches(
            positions, var_positions=None, batch_size=config.source.batch_size, obs_columns=[]
        )
        for batch in batches:
            non_integer += check_counts(batch.X, where=where).n_fractional
            X = sp.csr_matrix(batch.X @ genes.collapse, dtype=np.float32)
            if config.embedding is not None:
                kept.append(X)
            rows = obs.iloc[done : done + batch.n_cells]
            writer.append(batch.cell_ids, _arrow(rows), X)
            done += batch.n_cells
            if progress is not None:
                progress(done, n)
        counts = {
            "matrix": source.info.extra["matrices"][0],
            "integer": non_integer == 0,
            "non_negative": True,  # anything else was refused
            "non_integer_values": non_integer,
            "negative_values": 0,
        }
        summary = replace(report, raw_counts=counts).to_json()
        for field in summary["fields"].values():  # the per-value lists stay in the report file
            field.pop("mapped")
            field.pop("unmapped")
        summary["genes"] = genes.to_json()  # (and the genes but the first few of each kind)
        report = replace(report, raw_counts=counts, seconds=time.perf_counter() - started)
        embedding = _embedding(config, kept)
        carried = carried_from(config.input, positions, source.n_cells)
        obsm = dict(carried.obsm)  # the input's embeddings for these cells; a computed one wins
        if embedding is not None and config.embedding is not None:
            obsm[config.embedding.key] = embedding
        with _report_output(config, report):
            writer.finish(_uns(config, genes, summary, carried), obsm=obsm)
    except BaseException:
        writer.abort()
        raise
    return report


def _uns(
    config: HarmonizeConfig, genes: GeneMapping, summary: dict[str, Any], carried: Carried
) -> dict[str, Any]:
    """The organism, the title given by ``sets``, the default embedding, atlasprep's record; the
    input's title, batch_condition and default embedding where none is given."""
    uns: dict[str, Any] = {"organism_ontology_term_id": ORGANISM_TERMS[genes.organism], **carried.uns}
    title = dict(config.sets).get("title")
    if title is not None:
        uns["title"] = title
    if config.embedding is not None:
        uns["default_embedding"] = config.embedding.key
    uns["atlasprep"] = {"harmonize": json.loads(json.dumps(summary))}
    # the chain of steps the input carries, and this one (see atlasprep.provenance)
    step = new_step("harmonize", config, [file_input(config.input)])
    uns[PROVENANCE_KEY] = steps_json([*read_steps(config.input), step])
    return uns


def _embedding(config: HarmonizeConfig, kept: list[sp.csr_matrix]) -> np.ndarray | None:
    if config.embedding is None:
        return None
    counts = sp.vstack(kept, format="csr") if kept else sp.csr_matrix((0, 0), dtype=np.float32)
    return compute_embedding(counts, config.embedding, seed=config.source.seed)


def _arrow(frame: pd.DataFrame) -> pa.Table:
    converted = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
            column = column.astype("string")  # one Arrow type in every batch, nulls included
        converted[str(name)] = column
    return pa.Table.from_pandas(pd.DataFrame(converted), preserve_index=False)
