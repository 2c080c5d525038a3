"""`slice` against the reference: the same cells and counts as cellxgene_census.get_anndata."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import cellxgene_census
import numpy as np
import pandas as pd
import pytest
from cellxgene_ontology_guide.ontology_parser import OntologyParser

from atlasprep.errors import EmptyResultError, InputFormatError, UnknownTermError
from atlasprep.ontology import SCHEMA_VERSION
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec, open_census, read_gene_list, resolve_filter


def _hand_expanded(term_id: str) -> list[str]:
    """Descendants straight from the ontology package: an independent expansion for the test."""
    return OntologyParser(schema_version=SCHEMA_VERSION).get_term_descendants(term_id, include_self=True)


def _reference(store, value_filter: str) -> ad.AnnData:
    with cellxgene_census.open_soma(uri=str(store)) as census:
        return cellxgene_census.get_anndata(census, "Homo sapiens", obs_value_filter=value_filter)


def _assert_same_cells_and_counts(ours: ad.AnnData, ref: ad.AnnData) -> None:
    ours_ids = ours.obs["soma_joinid"].to_numpy()
    ref_ids = ref.obs["soma_joinid"].to_numpy()
    assert len(ours_ids) > 0
    assert set(ours_ids) == set(ref_ids)
    assert len(ours_ids) == len(ref_ids)
    # obs as get_anndata gives it: values, dtypes, every category of the enumeration in its order,
    # observation_joinid as text (an AnnData view would drop the unused categories: the frames
    # are compared as they are)
    pd.testing.assert_frame_equal(
        ours.obs.iloc[np.argsort(ours_ids)].reset_index(drop=True),
        ref.obs.iloc[np.argsort(ref_ids)].reset_index(drop=True),
    )
    ref_var = ref.var.set_index("feature_id").drop(columns="soma_joinid")
    ref_var.index.name = None
    pd.testing.assert_frame_equal(ours.var, ref_var)
    ref = ref[np.argsort(ref_ids)]
    ours = ours[np.argsort(ours_ids)]
    assert (ours.X != ref.X).nnz == 0


def test_slice_equals_get_anndata_with_hand_expanded_terms(small_census, tmp_path):
    out = tmp_path / "lung_immune.h5ad"
    result = slice_cells(
        SliceConfig(
            source=SourceSpec(
                census_uri=str(small_census),
                filter=CellFilter(tissue=("lung",), cell_type=("immune cell",)),
                batch_size=97,
            ),
            out=out,
        )
    )
    tissues = _hand_expanded("UBERON:0002048")
    cells = _hand_expanded("CL:0000738")
    ref = _reference(
        small_census,
        f"tissue_ontology_term_id in {tissues!r} and cell_type_ontology_term_id in {cells!r} "
        "and is_primary_data == True",
    )
    ours = ad.read_h5ad(out)
    assert result.n_cells == ours.n_obs == ref.n_obs
    _assert_same_cells_and_counts(ours, ref)
    # the lung subregion counts as lung, and more than one immune type is there
    assert ours.obs["cell_type_ontology_term_id"].nunique() > 1
    prov = ours.uns["atlasprep"]
    assert prov["resolved_terms"]["cell_type"]["immune cell"] == "CL:0000738"
    assert prov["resolved_terms"]["tissue"]["lung"] == "UBERON:0002048"
    assert "is_primary_data == True" in prov["compiled_filter"]


def test_all_data_and_apostrophe_labels(small_census, tmp_path):
    out = tmp_path / "ad.zarr"
    slice_cells(
        SliceConfig(
            source=SourceSpec(
                census_uri=str(small_census),
                filter=CellFilter(disease=("Alzheimer's disease",), primary_only=False),
            ),
            out=out,
        )
    )
    # MONDO's label is "Alzheimer disease"; the apostrophe form is a synonym users type
    diseases = _hand_expanded("MONDO:0004975")
    ref = _reference(small_census, f"disease_ontology_term_id in {diseases!r}")
    _assert_same_cells_and_counts(ad.read_zarr(out), ref)


def test_non_primary_duplicates_only_with_all_data(small_census):
    primary = slice_cells(SliceConfig(source=SourceSpec(census_uri=str(small_census)), dry_run=True))
    everything = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(primary_only=False)),
            dry_run=True,
        )
    )
    assert 0 < primary.n_cells < everything.n_cells


def test_exact_matches_the_term_only(small_census):
    expanded = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(tissue=("lung",))),
            dry_run=True,
            by=("tissue",),
        )
    )
    exact = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(tissue=("lung",), exact=True)),
            dry_run=True,
            by=("tissue",),
        )
    )
    assert set(exact.breakdown["tissue"]) == {"lung"}
    assert len(expanded.breakdown["tissue"]) > 1
    assert exact.n_cells < expanded.n_cells


def test_where_is_anded_and_sampling_is_seeded(small_census, tmp_path):
    base = SliceConfig(
        source=SourceSpec(census_uri=str(small_census), filter=CellFilter(where="nnz > 200")), dry_run=True
    )
    all_cells = slice_cells(base)
    a = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=base.source.filter, max_cells=50, seed=1),
            out=tmp_path / "a.h5ad",
        )
    )
    b = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=base.source.filter, max_cells=50, seed=1),
            out=tmp_path / "b.h5ad",
        )
    )
    c = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=base.source.filter, max_cells=50, seed=2),
            out=tmp_path / "c.h5ad",
        )
    )
    assert all_cells.n_cells > 50
    ids = [ad.read_h5ad(r.out).obs["soma_joinid"].tolist() for r in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]
    assert (ad.read_h5ad(a.out).obs["nnz"] > 200).all()


def test_per_group_is_balanced(small_census):
    result = slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), per_group=("tissue_general", 40)),
            dry_run=True,
            by=("tissue_general",),
        )
    )
    assert set(result.breakdown["tissue_general"].values()) == {40}


def test_genes_file_restricts_var(small_census, tmp_path):
    source = open_census(census_uri=str(small_census))
    var = source.var()
    source.close()
    wanted = [*list(var.index[[5, 1, 40]]), "ENSG99999999999"]
    genes = tmp_path / "genes.txt"
    genes.write_text("# a comment\n" + "\n".join(wanted) + "\n")
    out = tmp_path / "g.h5ad"
    slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), genes=read_gene_list(genes), max_cells=30),
            out=out,
        )
    )
    adata = ad.read_h5ad(out)
    assert sorted(adata.var_names) == sorted(wanted[:3])
    full = _reference(small_census, "is_primary_data == True")
    full = full[full.obs["soma_joinid"].isin(adata.obs["soma_joinid"])]
    full = full[:, full.var["feature_id"].isin(wanted)]
    order = np.argsort(full.obs["soma_joinid"].to_numpy())
    cols = pd.Index(full.var["feature_id"]).get_indexer(adata.var_names)
    assert (full.X[order][:, cols] != adata.X).nnz == 0


def test_anndata_input_matches_the_mask(small_census, tmp_path):
    whole = tmp_path / "whole.h5ad"
    slice_cells(
        SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(primary_only=False)), out=whole
        )
    )
    src = ad.read_h5ad(whole)
    out = tmp_path / "blood.zarr"
    slice_cells(
        SliceConfig(
            source=SourceSpec(inputs=(str(whole),), filter=CellFilter(tissue_general=("blood",))), out=out
        )
    )
    got = ad.read_zarr(out)
    mask = (src.obs["tissue_general"] == "blood") & src.obs["is_primary_data"]
    assert list(got.obs_names) == list(src.obs_names[mask])
    assert (got.X != src[mask.to_numpy()].X).nnz == 0


def _named_index_file(path, name, prefix, *, cid_column=False):  # type: ignore[no-untyped-def]
    cells = [f"{prefix}{i}" for i in range(6)]
    obs = pd.DataFrame({"group": pd.Categorical(list("ababab"))}, index=pd.Index(cells, name=name))
    if cid_column:  # a column of the index's name and values: anndata stores them once
        obs.insert(0, name, cells)
    ad.AnnData(X=np.arange(12, dtype=np.float32).reshape(6, 2), obs=obs).write_h5ad(path)
    return path


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_the_obs_index_keeps_its_name_as_anndata_keeps_it(tmp_path, suffix):
    """One file: adata[mask]'s name; several: anndata.concat's (kept where every file gives the
    same, else none); a column of the same name and values stays a column, as anndata reads it."""
    import warnings

    def sliced(*paths: Path, where: str | None = None) -> pd.DataFrame:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}{suffix}"
        flt = CellFilter(primary_only=False, where=where)
        slice_cells(SliceConfig(source=SourceSpec(inputs=tuple(map(str, paths)), filter=flt), out=out))
        return (ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)).obs

    one = _named_index_file(tmp_path / "one.h5ad", "cell_id", "a")
    src = ad.read_h5ad(one)
    got = sliced(one, where="group == 'b'")
    pd.testing.assert_frame_equal(got, src[(src.obs["group"] == "b").to_numpy()].copy().obs)
    assert got.index.name == "cell_id"

    same = _named_index_file(tmp_path / "same.h5ad", "cell_id", "b")
    other = _named_index_file(tmp_path / "other.h5ad", "barcode", "c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for files in ((one, same), (one, other)):
            want = ad.concat([ad.read_h5ad(f) for f in files], join="outer").obs.index.name
            assert sliced(*files).index.name == want
    assert sliced(one, same).index.name == "cell_id"
    assert sliced(one, other).index.name is None

    both = _named_index_file(tmp_path / "both.h5ad", "cid", "d", cid_column=True)
    pd.testing.assert_frame_equal(sliced(both), ad.read_h5ad(both).obs)


def test_unknown_term_suggests_and_missing_column_is_explained(small_census, tmp_path):
    with pytest.raises(UnknownTermError) as info:
        slice_cells(
            SliceConfig(
                source=SourceSpec(
                    census_uri=str(small_census), filter=CellFilter(cell_type=("leukocytes x",))
                ),
                dry_run=True,
            )
        )
    assert "leukocyte" in str(info.value)
    with pytest.raises(EmptyResultError, match="set allow_empty"):
        slice_cells(
            SliceConfig(
                source=SourceSpec(census_uri=str(small_census), filter=CellFilter(donor_id=("nobody",))),
                dry_run=True,
            )
        )
    plain = tmp_path / "plain.h5ad"
    ad.AnnData(np.ones((2, 2), dtype=np.float32)).write_h5ad(plain)
    with pytest.raises(InputFormatError, match="harmonize"):
        slice_cells(
            SliceConfig(
                source=SourceSpec(inputs=(str(plain),), filter=CellFilter(tissue=("lung",))), dry_run=True
            )
        )


def test_a_crash_mid_write_leaves_nothing_and_a_rerun_finishes(small_census, tmp_path):
    out = tmp_path / "crash.h5ad"
    config = SliceConfig(source=SourceSpec(census_uri=str(small_census), batch_size=64), out=out)

    def crash(done: int, total: int) -> None:
        if done >= 128:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        slice_cells(config, progress=crash)
    assert list(tmp_path.iterdir()) == []
    result = slice_cells(config)
    assert ad.read_h5ad(out).n_obs == result.n_cells > 128


def test_batches_stay_within_the_cell_budget(small_census):
    source = open_census(census_uri=str(small_census))
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter(primary_only=False))))
        sizes = [b.n_cells for b in source.iter_batches(positions, var_positions=None, batch_size=100)]
    finally:
        source.close()
    assert sum(sizes) == len(positions)
    assert max(sizes) <= 101  # a batch may close half a cell late, never more


def test_zarr_x_chunks_do_not_follow_the_batches(small_census, tmp_path):
    """X's arrays are chunked by a fixed count of values, so two batch sizes write the same X
    bytes (zarr's own guess followed the first batch: small batches, small chunks)."""
    import hashlib

    import zarr

    from atlasprep.slice.writer import X_CHUNKS

    def x_files(batch_size: int) -> dict[str, str]:
        out = tmp_path / f"b{batch_size}.zarr"
        slice_cells(
            SliceConfig(source=SourceSpec(census_uri=str(small_census), batch_size=batch_size), out=out)
        )
        group = zarr.open_group(out, mode="r")
        assert {group["X"][k].chunks for k in ("data", "indices", "indptr")} == {(X_CHUNKS["zarr"],)}
        files = sorted(p for p in (out / "X").rglob("*") if p.is_file())
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    assert x_files(64) == x_files(500)
