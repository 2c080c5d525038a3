"""`align barcodes`: barcode normalization, 10x readers and the RNA + ATAC / protein join, on the
CITE-seq and Multiome files of ../shared/data and on small synthetic inputs."""

from __future__ import annotations

import tarfile
import weakref
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_file

from atlasprep.align.barcodes import (
    RAW_BARCODE,
    BarcodeMatchError,
    JoinHow,
    NormalizedBarcodes,
    _build_mudata,
    align_barcodes,
    detect_core_length,
    join_keys,
    normalize_barcodes,
    read_barcode_map,
)
from atlasprep.align.modalities import load_modality, parse_input
from atlasprep.align.tenx import read_10x, read_10x_h5
from atlasprep.errors import (
    EmptyResultError,
    InputFormatError,
    OutputExistsError,
    SourceError,
    UsageError,
)

CITESEQ_TAR = "citeseq/pbmc_10k_protein_v3/filtered_feature_bc_matrix.tar.gz"
CITESEQ_H5AD = "citeseq/pbmc_10k_protein_v3.h5ad"
MULTIOME = "multiome/test_rna_atac.h5mu"


def _read_h5mu(path: Path) -> md.MuData:
    with md.set_options(pull_on_update=False):
        return md.read_h5mu(path)


def _barcodes(n: int, seed: int = 0) -> np.ndarray:
    letters = np.array(list("ACGT"))
    codes = np.random.default_rng(seed).integers(0, 4, size=(n, 16))
    return np.array(["".join(row) for row in letters[codes]], dtype=object)


def _h5ad(path: Path, obs_names: np.ndarray, n_vars: int = 3, prefix: str = "g") -> Path:
    X = np.arange(len(obs_names) * n_vars, dtype=np.float32).reshape(len(obs_names), n_vars)
    adata = ad.AnnData(
        X=sp.csr_matrix(X),
        obs=pd.DataFrame(index=pd.Index(obs_names, dtype=object)),
        var=pd.DataFrame(index=[f"{prefix}{i}" for i in range(n_vars)]),
    )
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def citeseq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball extracted into a temp dir, macOS junk files included."""
    target = tmp_path_factory.mktemp("citeseq")
    with tarfile.open(shared_file(CITESEQ_TAR)) as tar:
        tar.extractall(target, filter="data")
    directory = target / "filtered_feature_bc_matrix"
    assert (directory / "._features.tsv.gz").exists()
    return directory


# -- normalization -------------------------------------------------------------------------------


def test_suffixes_prefixes_and_case_reduce_to_the_16nt_core():
    cores = _barcodes(4)
    raw = [
        f"{cores[0]}-1",  # Cell Ranger GEM well
        f"sample1_{cores[1].lower()}",  # Seurat prefix, lower case
        f"s1#{cores[2]}-1",  # ArchR
        f"{cores[3]}-1-H0026_LV_V3-0",  # CELLxGENE curators' style
    ]
    norm = normalize_barcodes(raw, label="rna")
    assert list(norm.keys) == list(cores)
    assert norm.core_length == 16
    assert norm.gem_wells == ("1",)
    assert normalize_barcodes([f"{c}_batch2" for c in cores]).keys.tolist() == list(cores)


def test_core_length_is_the_common_longest_run():
    twelve = pd.Series([b[:12] + "-1" for b in _barcodes(5)])
    assert detect_core_length(twelve) == 12
    assert normalize_barcodes(twelve).keys.tolist() == [b[:12] for b in twelve.str[:12]]
    assert detect_core_length(pd.Series(["CELL_1", "CELL_2"])) is None


def test_names_without_a_nucleotide_core_are_upper_cased_without_the_well():
    norm = normalize_barcodes(["cell_1-1", "cell_2-1"])
    assert norm.core_length is None
    assert norm.keys.tolist() == ["CELL_1", "CELL_2"]


def test_a_barcode_without_the_core_is_an_error_naming_it():
    raw = [f"{b}-1" for b in _barcodes(5)] + ["weird-1"]
    with pytest.raises(
        InputFormatError, match=r"^atac: 1 of 6 barcodes have no 16-nt core \(e\.g\. WEIRD-1\)"
    ):
        normalize_barcodes(raw, label="atac")


def test_gem_wells_that_collide_are_an_error_unless_mapped(tmp_path):
    core = _barcodes(2)
    raw = [f"{core[0]}-1", f"{core[0]}-2", f"{core[1]}-1"]
    with pytest.raises(InputFormatError, match="differ only by GEM well") as info:
        normalize_barcodes(raw, label="rna")
    assert f"{core[0]}-1, {core[0]}-2 → {core[0]}" in str(info.value)
    assert "with barcode_map" in str(info.value)

    map_file = tmp_path / "map.tsv"
    map_file.write_text(f"{core[0]}-2\t{core[0]}-2\n")
    norm = normalize_barcodes(raw, barcode_map=read_barcode_map(map_file), label="rna")
    assert norm.keys.tolist() == [core[0], f"{core[0]}-2", core[1]]
    assert norm.n_mapped == 1


def test_samples_sharing_a_barcode_collide():
    core = _barcodes(1)[0]
    with pytest.raises(InputFormatError, match="differ by sample prefix or suffix"):
        normalize_barcodes([f"s1_{core}", f"s2_{core}"], label="rna")


def test_barcode_map_wins_and_is_checked(tmp_path):
    core = _barcodes(2)
    good = tmp_path / "good.tsv"
    good.write_text(f"atac_{core[0]}\tshared-A\n{core[1]}-1\tshared-B\n")
    norm = normalize_barcodes([f"atac_{core[0]}", f"{core[1]}-1"], barcode_map=read_barcode_map(good))
    assert norm.keys.tolist() == ["shared-A", "shared-B"]

    onto_one = tmp_path / "onto_one.tsv"
    onto_one.write_text(f"{core[0]}-1\tX\n{core[1]}-1\tX\n")
    with pytest.raises(InputFormatError, match="barcode_map sends them onto a join key"):
        normalize_barcodes([f"{c}-1" for c in core], barcode_map=read_barcode_map(onto_one))

    conflicting = tmp_path / "conflict.tsv"
    conflicting.write_text("a\tX\na\tY\n")
    with pytest.raises(InputFormatError, match="a is mapped to several barcodes"):
        read_barcode_map(conflicting)
    three = tmp_path / "three.tsv"
    three.write_text("a\tb\tc\n")
    with pytest.raises(InputFormatError, match="expected 2 tab-separated columns"):
        read_barcode_map(three)
    with pytest.raises(SourceError, match="no such file"):
        read_barcode_map(tmp_path / "missing.tsv")


def test_join_keys_orders_inner_and_outer():
    a, b = pd.Index(["A", "B", "C"]), pd.Index(["D", "C", "B"])
    assert join_keys([a, b], "inner").tolist() == ["B", "C"]
    assert join_keys([a, b], "outer").tolist() == ["A", "B", "C", "D"]


# -- 10x readers ---------------------------------------------------------------------------------


def test_tar_and_extracted_directory_read_the_same_ignoring_junk(citeseq_dir):
    from_tar = read_10x(shared_file(CITESEQ_TAR))
    from_dir = read_10x(citeseq_dir)
    assert from_tar.shape == from_dir.shape == (1024, 117)
    assert (from_tar.X != from_dir.X).nnz == 0
    assert from_tar.obs_names.equals(from_dir.obs_names)
    assert from_tar.var["feature_types"].value_counts().to_dict() == {
        "Gene Expression": 100,
        "Antibody Capture": 17,
    }
    assert from_tar.X.dtype == np.float32
    assert isinstance(from_tar.X, sp.csr_matrix)


def test_10x_h5_reader_on_space_ranger_output():
    adata = read_10x_h5(shared_file("spatial/visium_1.0.0/filtered_feature_bc_matrix.h5"))
    assert adata.shape == (100, 100)
    assert set(adata.var["feature_types"]) == {"Gene Expression"}
    assert adata.var_names[0].startswith("ENSG")


def test_10x_input_without_the_feature_type_names_the_types_present():
    with pytest.raises(InputFormatError, match=r"no 'Peaks' features \(feature types here: Antibody"):
        load_modality(str(shared_file(CITESEQ_TAR)), "atac")


# -- the join on real data -----------------------------------------------------------------------


def test_rna_and_protein_of_one_10x_matrix_match_fully(tmp_path, citeseq_dir):
    tar = shared_file(CITESEQ_TAR)
    out = tmp_path / "citeseq.h5mu"
    report = align_barcodes(str(tar), protein=str(citeseq_dir), out=out)
    assert report.n_obs == report.n_shared == 1024
    for modality in ("rna", "prot"):
        match = report.match(modality)
        assert (match.n_barcodes, match.n_matched, match.n_unmatched) == (1024, 1024, 0)
        assert match.match_fraction == 1.0
        assert match.core_length == 16

    mdata = _read_h5mu(out)
    full = read_10x(tar)
    assert mdata["rna"].shape == (1024, 100)
    assert mdata["prot"].shape == (1024, 17)
    assert mdata.obs["rna_present"].all()
    assert mdata.obs["prot_present"].all()
    assert mdata["rna"].obs_names.equals(mdata["prot"].obs_names)
    assert (mdata["rna"].obs[RAW_BARCODE] == full.obs_names).all()
    assert (mdata["rna"].obs_names == full.obs_names.str.removesuffix("-1")).all()
    protein = full[:, full.var["feature_types"] == "Antibody Capture"]
    assert (mdata["prot"].X != protein.X).nnz == 0
    assert report.to_json()["modalities"]["prot"]["n_matched"] == 1024


def test_mtx_rna_against_h5ad_protein_overlaps_partially(tmp_path, caplog):
    h5ad_path = shared_file(CITESEQ_H5AD)
    out = tmp_path / "partial.h5mu"
    with caplog.at_level("WARNING", logger="atlasprep"):
        report = align_barcodes(str(shared_file(CITESEQ_TAR)), protein=str(h5ad_path), out=out)
    # a low match is no error without min_match, but never silent
    assert "only 3.3% of its 1024 barcodes match (below 50%)" in caplog.text
    assert "only 17.0% of its 200 barcodes match" in caplog.text
    rna, prot = report.match("rna"), report.match("prot")
    # the data README: only 34 of the h5ad's 200 barcodes are among the mtx's 1,024
    assert (rna.n_barcodes, rna.n_matched, rna.n_unmatched) == (1024, 34, 990)
    assert (prot.n_barcodes, prot.n_matched, prot.n_unmatched) == (200, 34, 166)
    assert prot.match_fraction == pytest.approx(0.17)
    assert rna.match_fraction == pytest.approx(34 / 1024)
    assert report.n_obs == 34
    assert prot.source.endswith("obsm['protein_expression']")

    mdata = _read_h5mu(out)
    with h5py.File(h5ad_path, "r") as f:
        names = f["uns/protein_names"].asstr()[:]
        values = f["obsm/protein_expression"][:]
        obs_names = pd.Index(f["obs/index"].asstr()[:])
    assert mdata["prot"].var_names.tolist() == list(names)
    rows = obs_names.get_indexer(mdata["prot"].obs[RAW_BARCODE])
    assert (rows >= 0).all()
    assert np.array_equal(np.asarray(mdata["prot"].X), values[rows].astype(np.float32))


def test_gene_symbols_and_antibody_ids_that_clash_are_prefixed(tmp_path):
    out = tmp_path / "clash.h5mu"
    report = align_barcodes(str(shared_file(CITESEQ_H5AD)), protein=str(shared_file(CITESEQ_TAR)), out=out)
    assert (report.match("rna").n_matched, report.match("prot").n_matched) == (34, 34)
    assert report.match("prot").n_renamed_features == 4  # CD4, CD14, CD19, TIGIT are genes too
    mdata = _read_h5mu(out)
    assert "prot:CD4" in mdata["prot"].var_names
    assert "CD4" in mdata["rna"].var_names
    assert mdata.var_names.is_unique


def test_min_match_fails_naming_the_modality_and_writes_nothing(tmp_path):
    out = tmp_path / "low.h5mu"
    with pytest.raises(
        BarcodeMatchError, match=r"^min_match = 0\.1: .*rna \(rna\) 3\.3%: 34 of 1024"
    ) as info:
        align_barcodes(
            str(shared_file(CITESEQ_TAR)), protein=str(shared_file(CITESEQ_H5AD)), out=out, min_match=0.1
        )
    assert info.value.exit_code == 1
    assert "prot" not in str(info.value)  # 17% passes
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_outer_join_marks_cells_missing_from_a_modality(tmp_path):
    out = tmp_path / "outer.h5mu"
    report = align_barcodes(
        str(shared_file(CITESEQ_TAR)), protein=str(shared_file(CITESEQ_H5AD)), out=out, how="outer"
    )
    assert report.n_obs == 1024 + 200 - 34
    assert report.n_shared == 34
    mdata = _read_h5mu(out)
    obs = mdata.obs
    assert mdata.n_obs == 1190
    assert int(obs["rna_present"].sum()) == 1024
    assert int(obs["prot_present"].sum()) == 200
    assert int((obs["rna_present"] & obs["prot_present"]).sum()) == 34
    assert mdata["rna"].n_obs == 1024
    assert mdata["prot"].n_obs == 200
    only_prot = obs.index[~obs["rna_present"]]
    assert set(only_prot) <= set(mdata["prot"].obs_names)
    assert not set(only_prot) & set(mdata["rna"].obs_names)


def test_multiome_h5mu_split_into_rna_and_atac_realigns_fully(tmp_path):
    path = shared_file(MULTIOME)
    out = tmp_path / "multiome.h5mu"
    report = align_barcodes(f"{path}:rna", atac=f"{path}:atac", out=out)
    assert report.n_obs == 1000
    assert [(m.modality, m.n_barcodes, m.n_matched) for m in report.modalities] == [
        ("rna", 1000, 1000),
        ("atac", 1000, 1000),
    ]
    mdata = _read_h5mu(out)
    assert mdata["rna"].shape == (1000, 45)
    assert mdata["atac"].shape == (1000, 174)
    original = load_modality(str(path), "atac").adata  # no suffix: the modality named "atac"
    assert (mdata["atac"].obs[RAW_BARCODE] == original.obs_names).all()
    assert (mdata["atac"].X != original.X).nnz == 0


def test_input_specs_pick_the_kind_and_the_h5mu_modality(citeseq_dir):
    path = shared_file(MULTIOME)
    spec = parse_input(f"{path}:atac", "rna")
    assert (spec.kind, spec.path, spec.h5mu_modality, spec.field) == ("h5mu", path, "atac", "rna")
    assert parse_input(str(shared_file(CITESEQ_TAR)), "prot").kind == "10x"
    assert parse_input(citeseq_dir.parent, "rna").kind == "10x"  # holds filtered_feature_bc_matrix/
    assert parse_input(str(shared_file(CITESEQ_H5AD)), "prot").kind == "h5ad"
    with pytest.raises(SourceError, match="no such file"):
        parse_input(f"{shared_file(CITESEQ_H5AD)}.h5mu:rna", "rna")
    with pytest.raises(InputFormatError, match=r"':rna' picks a modality of an \.h5mu file only"):
        parse_input(f"{shared_file(CITESEQ_H5AD)}:rna", "rna")


def test_h5mu_without_the_named_modality_lists_what_it_has():
    path = shared_file(MULTIOME)
    with pytest.raises(InputFormatError, match=r"no modality 'prot' in the file \(it has atac, rna\)"):
        load_modality(f"{path}:prot", "prot")
    with pytest.raises(InputFormatError, match=r"no modality called prot or protein or adt.*:NAME"):
        load_modality(str(path), "prot")


# -- the join on synthetic inputs ----------------------------------------------------------------


def test_archr_prefixed_atac_joins_cell_ranger_rna(tmp_path):
    cores = _barcodes(6, seed=1)
    rna = _h5ad(tmp_path / "rna.h5ad", np.array([f"{c}-1" for c in cores], dtype=object))
    atac = _h5ad(tmp_path / "atac.h5ad", np.array([f"lib1#{c}-1" for c in cores[2:][::-1]], dtype=object))
    report = align_barcodes(str(rna), atac=str(atac), out=tmp_path / "out.h5mu")
    assert (report.match("rna").n_matched, report.match("atac").n_matched) == (4, 4)
    mdata = _read_h5mu(tmp_path / "out.h5mu")
    assert mdata.obs_names.tolist() == list(cores[2:])  # RNA's order
    assert mdata["atac"].obs[RAW_BARCODE].tolist() == [f"lib1#{c}-1" for c in cores[2:]]
    # each row moved with its barcode: atac row i was written from input row (3 - i)
    assert np.array_equal(mdata["atac"].X.toarray()[:, 0], np.array([9.0, 6.0, 3.0, 0.0]))
    # both inputs name their features g0…g2: the later modality's names get its prefix
    assert report.match("atac").n_renamed_features == 3
    assert mdata["atac"].var_names.tolist() == ["atac:g0", "atac:g1", "atac:g2"]
    assert mdata.var_names.is_unique


def test_barcode_map_joins_different_whitelists(tmp_path):
    gex, atac_wl = _barcodes(3, seed=2), _barcodes(3, seed=3)
    rna = _h5ad(tmp_path / "rna.h5ad", np.array([f"{c}-1" for c in gex], dtype=object))
    atac = _h5ad(tmp_path / "atac.h5ad", np.array([f"{c}-1" for c in atac_wl], dtype=object))
    map_file = tmp_path / "map.tsv"
    pd.DataFrame({"a": [f"{c}-1" for c in atac_wl], "g": list(gex)}).to_csv(
        map_file, sep="\t", header=False, index=False
    )
    with pytest.raises(EmptyResultError, match="no barcode is shared"):
        align_barcodes(str(rna), atac=str(atac), out=tmp_path / "none.h5mu")
    report = align_barcodes(str(rna), atac=str(atac), out=tmp_path / "out.h5mu", barcode_map=map_file)
    assert report.match("atac").n_mapped == 3
    assert report.n_obs == 3


def test_synthetic_10x_h5_splits_peaks_and_gene_expression(tmp_path):
    barcodes = np.array([f"{c}-1" for c in _barcodes(4, seed=4)])
    features = ["ENSG01", "ENSG02", "chr1:100-200"]
    types = ["Gene Expression", "Gene Expression", "Peaks"]
    dense = np.arange(12, dtype=np.int32).reshape(4, 3)  # cells × features
    csr = sp.csr_matrix(dense)
    path = tmp_path / "arc.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = barcodes.astype("S")
        g["data"], g["indices"], g["indptr"] = csr.data, csr.indices, csr.indptr
        g["shape"] = np.array([3, 4])
        feats = g.create_group("features")
        feats["id"] = np.array(features, dtype="S")
        feats["name"] = np.array(features, dtype="S")
        feats["feature_type"] = np.array(types, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * 3, dtype="S")
    report = align_barcodes(str(path), atac=str(path), out=tmp_path / "arc.h5mu")
    assert report.n_obs == 4
    mdata = _read_h5mu(tmp_path / "arc.h5mu")
    assert mdata["atac"].var_names.tolist() == ["chr1:100-200"]
    assert np.array_equal(mdata["rna"].X.toarray(), dense[:, :2])
    assert np.array_equal(mdata["atac"].X.toarray(), dense[:, 2:])


def test_argument_and_output_errors(tmp_path):
    tar = str(shared_file(CITESEQ_TAR))
    with pytest.raises(UsageError, match="set atac or protein besides rna"):
        align_barcodes(tar, out=tmp_path / "x.h5mu")
    with pytest.raises(UsageError, match=r"must end in \.h5mu"):
        align_barcodes(tar, protein=tar, out=tmp_path / "x.h5ad")
    with pytest.raises(UsageError, match="choose inner or outer"):
        align_barcodes(tar, protein=tar, out=tmp_path / "x.h5mu", how="left")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="between 0 and 1"):
        align_barcodes(tar, protein=tar, out=tmp_path / "x.h5mu", min_match=34)
    with pytest.raises(SourceError, match=r"^protein .*nope\.h5ad: no such file"):
        align_barcodes(tar, protein=str(tmp_path / "nope.h5ad"), out=tmp_path / "x.h5mu")
    existing = tmp_path / "exists.h5mu"
    existing.write_text("")
    with pytest.raises(OutputExistsError, match="set overwrite to replace it"):
        align_barcodes(tar, protein=tar, out=existing)
    align_barcodes(tar, protein=tar, out=existing, overwrite=True)
    assert _read_h5mu(existing).n_obs == 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.h5mu"]


def test_a_crashed_runs_temp_file_is_swept(tmp_path):
    src = shared_file("multiome/test_rna_atac.h5mu")
    out = tmp_path / "mo.h5mu"
    stale = tmp_path / "mo.h5mu.tmp-999999999"  # no such process
    stale.write_bytes(b"half a file")
    align_barcodes(f"{src}:rna", atac=f"{src}:atac", out=out)
    assert out.exists()
    assert not stale.exists()


def _modality(obs_names: list[str], n_vars: int, prefix: str) -> ad.AnnData:
    X = sp.random(len(obs_names), n_vars, density=0.5, format="csr", dtype=np.float32, random_state=0)
    return ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(obs_names, dtype=object)),
        var=pd.DataFrame(index=[f"{prefix}{i}" for i in range(n_vars)]),
    )


def _normalized(adata: ad.AnnData) -> NormalizedBarcodes:
    return normalize_barcodes(adata.obs_names, barcode_map=None, label="test")


def test_join_copies_no_input_already_in_the_joins_order():
    rna, atac = _modality(["c0", "c1", "c2"], 4, "g"), _modality(["c0", "c1", "c2"], 5, "chr1:")
    inputs = {"rna": rna.X, "atac": atac.X}
    normalized = {"rna": _normalized(rna), "atac": _normalized(atac)}
    cells = join_keys([n.keys for n in normalized.values()], JoinHow.inner)
    with md.set_options(pull_on_update=False):
        mdata = _build_mudata({"rna": rna, "atac": atac}, normalized, cells, JoinHow.inner)
    assert all(mdata[m].X is inputs[m] for m in inputs)  # the loaded matrices themselves
    assert mdata["atac"].obs[RAW_BARCODE].tolist() == ["c0", "c1", "c2"]


def test_join_releases_each_input_once_its_cells_are_copied():
    rna = _modality(["c0", "c1", "c2", "c3"], 4, "g")
    atac = _modality(["c3", "c1", "c0"], 5, "chr1:")  # another order, and a cell fewer
    expected = {"rna": rna.X[[0, 1, 3]].toarray(), "atac": atac.X[[2, 1, 0]].toarray()}
    normalized = {"rna": _normalized(rna), "atac": _normalized(atac)}
    cells = join_keys([n.keys for n in normalized.values()], JoinHow.inner)
    inputs = [weakref.ref(rna.X), weakref.ref(atac.X)]
    adatas = {"rna": rna, "atac": atac}
    del rna, atac
    with md.set_options(pull_on_update=False):
        mdata = _build_mudata(adatas, normalized, cells, JoinHow.inner)
    assert adatas == {}  # taken out one at a time
    assert [ref() for ref in inputs] == [None, None]  # neither input outlives its joined copy
    assert mdata.obs_names.tolist() == ["C0", "C1", "C3"]
    for m, values in expected.items():
        assert np.array_equal(mdata[m].X.toarray(), values)
