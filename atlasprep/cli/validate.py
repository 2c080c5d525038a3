"""`atlasprep validate`: a token store's integrity, or an AnnData slice against the CELLxGENE schema."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atlasprep._names import Profile
from atlasprep.cli._app import command, err_console
from atlasprep.cli._source import InputAlias, one_input
from atlasprep.errors import UsageError


@command(
    "validate",
    help=(
        "Check a token store or an AnnData slice. A token store (a directory with manifest.json): every "
        "shard's sha256, cell and token counts, token ids within the vocabulary, no split leakage. A slice "
        "(.h5ad/.zarr): every rule of CELLxGENE schema 7.1.0 that cellxgene-schema 7.1.2 enforces, with the "
        "same verdict (obs: required columns, each *_ontology_term_id a live term of the right ontology and "
        "branch, categorical and boolean types, no deprecated or reserved columns; uns: title, organism, "
        "default_embedding, batch_condition, colours, no reserved or deprecated keys; obsm: at least one "
        "finite X_ embedding; var: Ensembl IDs of the organism, feature_is_filtered, no reserved columns; "
        "raw counts whole, non-negative, float32, CSR, one nonzero per cell, no duplicated cells; the "
        "Visium and bead-based spatial rules; experimental conditions and genetic perturbations). Each "
        "problem names the field the schema's rule is about. --profile atlasprep drops the upload-only "
        "rules (title, embeddings) for files meant only for training and says so; --profile hca adds the "
        "HCA Tier 1 fields; --asctb checks cell types against an ASCT+B table. Exit 1 listing each "
        "problem with its field and how many cells.\n\n"
        "Examples:\n\n  atlasprep validate store/\n\n  atlasprep validate wu2020.cxg.h5ad\n\n"
        "  atlasprep validate train_only.h5ad --profile atlasprep\n\n"
        "  atlasprep validate heart.h5ad --profile hca --asctb ASCT-B_VH_Heart.csv --json"
    ),
)
def validate_command(
    path: Path | None = typer.Argument(
        None, help="A token store directory, or an .h5ad/.zarr slice.", show_default=False
    ),
    input_option: InputAlias = None,
    profile: Profile = typer.Option(
        Profile.cellxgene,
        "--profile",
        help=(
            "Slices: cellxgene (what a CELLxGENE upload needs), atlasprep (the same without title and "
            "embeddings: training-only files), or hca (adds HCA Tier 1)."
        ),
    ),
    asctb: Path | None = typer.Option(None, "--asctb", help="Slices: an ASCT+B table (CSV) to check with."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    path = one_input(path, input_option, "the store or file to validate")
    if (path / "manifest.json").exists() or (path.is_dir() and path.suffix != ".zarr"):
        if asctb is not None or profile != "cellxgene":
            raise UsageError("--profile and --asctb check slices, not token stores")
        from atlasprep.shard import validate_store

        problems = [str(p) for p in validate_store(path)]
        if as_json:
            typer.echo(json.dumps({"path": str(path), "kind": "token store", "problems": problems}, indent=2))
        else:
            for problem in problems:
                typer.echo(problem)
        _verdict(path, len(problems), 0, as_json=as_json)
        return
    from atlasprep.harmonize.validate import validate_anndata

    report = validate_anndata(path, profile=profile, asctb=asctb)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(report.ontology_versions.items()))
        err_console.print(f"checked against CELLxGENE schema {report.schema_version}; {versions}")
        for found in report.problems:
            typer.echo(str(found))
        for warning in report.warnings:
            err_console.print(f"[yellow]warning[/] {warning}")
    _verdict(path, len(report.problems), len(report.warnings), as_json=as_json)


def _verdict(path: Path, n_problems: int, n_warnings: int, *, as_json: bool) -> None:
    """Exit 1 on problems; else say it is valid (on stderr when stdout carries JSON)."""
    if n_problems:
        err_console.print(f"[bold red]{n_problems} problem(s)[/] in {path}")
        raise typer.Exit(1)
    suffix = f" ({n_warnings} warning(s))" if n_warnings else ""
    typer.echo(f"{path}: valid{suffix}", err=as_json)
