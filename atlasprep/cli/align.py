"""`atlasprep align barcodes` and `atlasprep align ccf`: thin CLI over :mod:`atlasprep.align`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from atlasprep._names import JoinHow
from atlasprep.cli._app import app, command, out_console
from atlasprep.cli._render import counts_table
from atlasprep.errors import UsageError

if TYPE_CHECKING:
    from atlasprep.align.ccf import CcfSummary

align_app = typer.Typer(
    help=(
        "Join modalities by barcode (10x Multiome RNA+ATAC, CITE-seq RNA+protein) into a MuData, or "
        "register a spatial section into the HRA Common Coordinate Framework.\n\n"
        "Examples:\n\n"
        "  atlasprep align barcodes --rna filtered_feature_bc_matrix/ --protein filtered_feature_bc_matrix/ "
        "--out citeseq.h5mu\n\n"
        "  atlasprep align ccf --spatial section.h5ad --registration block.json "
        "--reference-organ VH_F_Heart.glb --crosswalk ASCT-B_3D_Models_Mapping.csv --out registered.h5ad"
    ),
    no_args_is_help=True,
)
app.add_typer(align_app, name="align")


@command(
    "barcodes",
    group=align_app,
    help=(
        "Join modalities by cell barcode into one MuData (.h5mu): RNA with ATAC and/or protein. Inputs are "
        "h5ad, h5mu (FILE.h5mu:rna, FILE.h5mu:atac) or 10x outputs (a filtered_feature_bc_matrix directory, "
        "its .tar.gz, or a .h5), split by feature type (Gene Expression, Antibody Capture, Peaks). Barcodes "
        "are normalized (GEM-well suffixes such as -1, sample prefixes) unless --barcode-map says otherwise; "
        "matched and unmatched counts are reported per modality.\n\n"
        "Examples:\n\n"
        "  atlasprep align barcodes --rna multiome.h5mu:rna --atac multiome.h5mu:atac --out paired.h5mu\n\n"
        "  atlasprep align barcodes --rna pbmc_10k_protein_v3/ --protein pbmc_protein.h5ad "
        "--how outer --min-match 0.1 --out citeseq.h5mu"
    ),
)
def barcodes_command(
    rna: str = typer.Option(..., "--rna", help="The RNA input."),
    out: Path = typer.Option(..., "--out", "-o", help="The MuData output (.h5mu)."),
    atac: str | None = typer.Option(None, "--atac", help="The ATAC input (peaks)."),
    protein: str | None = typer.Option(None, "--protein", help="The protein input (antibody capture)."),
    how: JoinHow = typer.Option(
        JoinHow.inner, "--how", help="inner (cells in every modality) or outer (all, marked)."
    ),
    barcode_map: Path | None = typer.Option(
        None, "--barcode-map", help="TSV: barcode in a modality -> shared barcode (wins over normalization)."
    ),
    min_match: float = typer.Option(0.0, "--min-match", help="Fail if a modality matches less than this."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    from atlasprep.align.barcodes import align_barcodes
    from atlasprep.errors import UsageError

    if atac is None and protein is None:
        raise UsageError("give --atac or --protein (or both) to join with --rna")
    report = align_barcodes(
        rna,
        atac=atac,
        protein=protein,
        out=out,
        how=how,
        barcode_map=barcode_map,
        min_match=min_match,
        overwrite=overwrite,
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    table = Table(title=f"{out}: {report.n_obs:,} cells ({report.how} join)", show_edge=False)
    for column in ("modality", "input", "barcodes", "matched", "unmatched", "match"):
        table.add_column(column)
    for m in report.modalities:
        table.add_row(
            m.modality,
            str(m.source),
            f"{m.n_barcodes:,}",
            f"{m.n_matched:,}",
            f"{m.n_unmatched:,}",
            f"{m.match_fraction:.1%}",
        )
    out_console.print(table)


@command(
    "ccf",
    group=align_app,
    fields={
        "pixel_size_um": "pixel_size",
        "section_z_mm": "section_z",
        "bin_size_mm": "bin_size",
        "spatial_table": "table",
        "spatialdata_out": "spatialdata",
    },
    help=(
        "Register a spatial section into the HRA Common Coordinate Framework: cell coordinates "
        "(obsm['spatial'] in pixels × µm per pixel, at --section-z mm in the tissue block) are carried "
        "through the block's RUI placement into the reference organ (obsm['ccf'], mm); each cell gets the "
        "organ's anatomical structures that contain it (mesh containment), as UBERON IDs via the crosswalk "
        "(obs['anatomical_structure_ontology_term_id']). --neighbors K adds a spatial kNN graph (obsp); "
        "--bin-size mm adds obs['spatial_bin'], the spatial context token for tokenize. Without a "
        "registration only neighbors and bins on the section's own coordinates are made.\n\n"
        "--spatial also takes a 10x Visium Space Ranger folder (read by scanpy: pip install "
        "'atlasprep\\[spatial]'; in-tissue spots only unless --all-spots) and a SpatialData .zarr store (its "
        "table, placed at the centres of the shapes or points it annotates). µm per pixel: --pixel-size "
        "when given, else what the file states (Visium: 65 µm / spot_diameter_fullres, or microns_per_pixel; "
        "SpatialData: the unit its coordinate system names), else 1; the summary says which.\n\n"
        "Examples:\n\n"
        "  atlasprep align ccf --spatial section.h5ad --registration block.json --reference-organ "
        "VH_F_Heart.glb --crosswalk ASCT-B_3D_Models_Mapping.csv --pixel-size 0.5 --bin-size 1 "
        "--out registered.h5ad\n\n"
        "  atlasprep align ccf --spatial mpfc-starmap.loom --neighbors 6 --bin-size 0.5 "
        "--out starmap.h5ad\n\n"
        "  atlasprep align ccf --spatial spaceranger/outs --neighbors 6 --bin-size 1 --out visium.h5ad"
    ),
)
def ccf_command(
    spatial: Path = typer.Option(
        ...,
        "--spatial",
        help="The section: .h5ad, .zarr, .loom, a Visium Space Ranger folder or a SpatialData store.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The registered section (.h5ad or .zarr)."),
    registration: Path | None = typer.Option(None, "--registration", help="RUI registration (JSON/JSON-LD)."),
    registration_id: str | None = typer.Option(
        None, "--registration-id", help="Which block of a JSON-LD collection (its @id)."
    ),
    reference_organ: Path | None = typer.Option(None, "--reference-organ", help="The HRA organ (.glb)."),
    crosswalk: Path | None = typer.Option(None, "--crosswalk", help="3D node name → ontology ID (CSV)."),
    organ_node: str | None = typer.Option(
        None,
        "--organ-node",
        help="Which node of the --reference-organ GLB is the organ (e.g. VHF_heart) \\[default: the node "
        "named like the file, else its only root].",
    ),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="µm per pixel of obsm['spatial'] \\[default: as the file states, else 1]."
    ),
    section_z: float | None = typer.Option(
        None,
        "--section-z",
        help="Depth of the section in the block, mm from its −z face \\[default: middle].",
    ),
    neighbors: int | None = typer.Option(None, "--neighbors", help="Add a spatial kNN graph (K neighbours)."),
    section_center: str | None = typer.Option(
        None,
        "--section-center",
        help="X,Y: the pixel on the centre of the block face \\[default: the centre of the cells' "
        "bounding box]. Give the same one to place parts of one section (files split or filtered) alike; "
        "the output's uns['ccf']['section_center_px'] records the one used.",
    ),
    section_key: str | None = typer.Option(
        None,
        "--section-key",
        help="An obs column naming each cell's section: the kNN graph joins no two sections "
        "(sections laid over one another in one coordinate frame).",
    ),
    bin_size: float | None = typer.Option(None, "--bin-size", help="Add 3-D spatial bins of this size (mm)."),
    table: str | None = typer.Option(None, "--table", help="Which table of a SpatialData store."),
    all_spots: bool = typer.Option(False, "--all-spots", help="Visium: keep the spots off the tissue too."),
    spatialdata_out: bool = typer.Option(
        False,
        "--spatialdata",
        help="Write --out (.zarr) as a SpatialData store: table, cell circles, CCF points.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON."),
) -> None:
    from atlasprep.align.ccf import register_file

    summary = register_file(
        spatial,
        out,
        registration=registration,
        reference_organ=reference_organ,
        crosswalk=crosswalk,
        registration_id=registration_id,
        organ_node=organ_node,
        pixel_size_um=pixel_size,
        section_z_mm=section_z,
        neighbors=neighbors,
        section_key=section_key,
        section_center_px=_pixel_pair(section_center),
        bin_size_mm=bin_size,
        spatial_table=table,
        all_spots=all_spots,
        spatialdata_out=spatialdata_out,
        overwrite=overwrite,
    )
    _show_ccf(summary, as_json=as_json)


def _pixel_pair(text: str | None) -> tuple[float, float] | None:
    """``--section-center X,Y`` as two finite numbers."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--section-center {text!r}: give two numbers, X,Y (pixels)") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise UsageError(f"--section-center {text!r}: give two finite numbers, X,Y (pixels)")
    return x, y


def _show_ccf(summary: CcfSummary, *, as_json: bool) -> None:
    if as_json:
        payload = {
            "out": str(summary.out),
            "n_cells": summary.n_obs,
            "registration": summary.registration_id,
            "target": summary.target,
            "cells_in_structures": summary.n_in_structures,
            "structures": dict(summary.structures or {}),
            "labels": dict(summary.labels or {}),
            "n_bins": summary.n_bins,
            "neighbors": summary.n_neighbors,
            "pixel_size_um": summary.pixel_size_um,
            "pixel_size_source": summary.pixel_size_source,
            "section_center_px": list(summary.section_center_px) if summary.section_center_px else None,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(
        f"{summary.out}: {summary.n_obs:,} cells"
        + (f"; {summary.n_in_structures:,} inside structures of {summary.target}" if summary.target else "")
        + (f"; {summary.n_bins:,} spatial bins" if summary.n_bins else "")
        + (f"; {summary.n_neighbors}-NN graph" if summary.n_neighbors else "")
        + f"; {summary.pixel_size_um:.4g} µm per pixel ({summary.pixel_size_source})"
    )
    if summary.structures:
        labels = dict(summary.labels or {})
        out_console.print(
            counts_table("anatomical_structure_ontology_term_id", summary.structures, labels=labels)
        )
