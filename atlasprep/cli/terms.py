"""`atlasprep terms`: what a label, synonym or ID resolves to, and how many descendants it has."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from atlasprep.cli._app import command
from atlasprep.errors import UnknownTermError, UsageError
from atlasprep.ontology import (
    DEFAULT_ONTOLOGIES,
    SCHEMA_VERSION,
    get_parser,
    ontology_versions,
    resolve_term,
    term_label,
)


@command(
    "terms",
    help=(
        "Resolve a label, synonym, everyday name or ID to its ontology term: ID, label, ontology, how "
        "it matched and how many descendants a filter on it also matches. With no exact match, "
        "print the closest labels and exit 1.\n\n"
        f"Ontologies are the CELLxGENE schema {SCHEMA_VERSION} releases that cellxgene-ontology-guide "
        "ships (offline).\n\n"
        "Examples:\n\n"
        "  atlasprep terms 'immune cell'\n\n"
        '  atlasprep terms "Peyer\'s patch" --ontology UBERON\n\n'
        "  atlasprep terms CL:0000624 --json"
    ),
)
def terms_command(
    query: str = typer.Argument(..., help="A label, synonym, everyday name or term ID (CL:0000738)."),
    ontology: list[str] = typer.Option(
        [],
        "--ontology",
        "-O",
        help=f"Search only this ontology (repeatable). Default: {', '.join(DEFAULT_ONTOLOGIES)}.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    limit: int = typer.Option(5, "--limit", help="How many close labels to show when nothing matches."),
) -> None:
    supported = get_parser().cxg_schema.supported_ontologies
    names = {name.lower(): name for name in supported}
    chosen = []
    for name in ontology:
        if name.lower() not in names:
            raise UsageError(f"--ontology {name!r} is not one of {', '.join(sorted(supported))}")
        chosen.append(names[name.lower()])
    versions = ontology_versions()
    try:
        term = resolve_term(query, chosen or None)
    except UnknownTermError as exc:
        suggestions = [(term_label(t), t) for t in exc.suggestions[:limit]]
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "query": query,
                        "match": None,
                        "error": str(exc),
                        "suggestions": [
                            {"label": lab, "term_id": t, "ontology": t.split(":")[0]}
                            for lab, t in suggestions
                        ],
                    },
                    indent=2,
                )
            )
        else:
            typer.echo(f"No term matches {query!r}.", err=True)
            if suggestions:
                table = Table(title="closest labels", show_edge=False)
                for column in ("term_id", "label"):
                    table.add_column(column)
                for lab, t in suggestions:
                    table.add_row(t, lab)
                Console().print(table)
            else:
                typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "query": query,
                    "match": term.to_json(),
                    "schema_version": SCHEMA_VERSION,
                    "ontology_release": versions.get(term.ontology),
                },
                indent=2,
            )
        )
        return
    table = Table(
        show_header=False, show_edge=False, caption=f"{term.ontology} {versions.get(term.ontology, '')}"
    )
    table.add_column(style="dim")
    table.add_column()
    for key, value in (
        ("term", term.term_id),
        ("label", term.label),
        ("ontology", term.ontology),
        ("matched by", term.how),
        ("descendants", f"{term.n_descendants:,}"),
    ):
        table.add_row(key, value)
    Console().print(table)
