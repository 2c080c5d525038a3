"""`atlasprep terms`: what a label, synonym or ID resolves to, and how many descendants it has."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from atlasprep._names import DEFAULT_ONTOLOGIES, SCHEMA_VERSION
from atlasprep.cli._app import command, out_console
from atlasprep.cli._source import list_names
from atlasprep.errors import UnknownTermError, UsageError

# the ontologies (cellxgene-ontology-guide) are imported when a command runs, not for --help
if TYPE_CHECKING:
    from atlasprep.ontology import ResolvedTerm


@command(
    "terms",
    help=(
        "Look up an ontology term: what a label, synonym, everyday name or ID resolves to — term ID, "
        "label, ontology, how it matched, and how many descendants a filter on it also selects. "
        "This is the same resolution `atlasprep slice` applies to its term filters.\n\n"
        "Matching: an ID (any case), then the exact label, an exact synonym, a curated alias "
        "('immune cell' → leukocyte), then normalized forms (plurals, 'CD14+', hyphens, "
        "apostrophes). A name that several terms share is refused with every candidate (exit 2); "
        "with no match the closest labels are printed and the exit code is 1.\n\n"
        f"Ontologies are the CELLxGENE schema {SCHEMA_VERSION} releases that cellxgene-ontology-guide "
        "ships (offline).\n\n"
        "Examples:\n\n"
        "  atlasprep terms 'immune cell'\n\n"
        '  atlasprep terms "Peyer\'s patch" --ontology UBERON\n\n'
        "  atlasprep terms cl:0000624 --json\n\n"
        "  atlasprep terms 'T cell' 'B cell' lung --tsv"
    ),
    fields={"ontologies": "ontology"},
)
def terms_command(
    queries: list[str] = typer.Argument(
        ..., help="Labels, synonyms, everyday names or term IDs (CL:0000738); one or several."
    ),
    ontology: list[str] = typer.Option(
        [],
        "--ontology",
        "-O",
        help=(
            "Search only this ontology, e.g. CL, UBERON, MONDO, EFO (repeatable or comma-separated; "
            f"any case). Default: {', '.join(DEFAULT_ONTOLOGIES)}."
        ),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    tsv: bool = typer.Option(
        False, "--tsv", help="Print a tab-separated table, one row per query (query, term_id, label, …)."
    ),
    limit: int = typer.Option(
        5, "--limit", min=1, help="How many close labels to show when nothing matches."
    ),
) -> None:
    from atlasprep.ontology import ontology_versions, suggest

    if as_json and tsv:
        raise UsageError("--json and --tsv: choose one output")
    searched = _searched([name for name in list_names(ontology) if name])
    versions = {name: release for name, release in ontology_versions().items() if name in searched}
    found = {query: _resolve(query, searched) for query in dict.fromkeys(queries)}
    if tsv:
        _print_tsv(found)
    elif len(found) > 1:
        _print_several(found, searched, versions, as_json=as_json, limit=limit)
    else:
        query, term = next(iter(found.items()))
        if isinstance(term, UnknownTermError):
            _no_match(query, str(term), suggest(query, searched, n=limit), versions, as_json=as_json)
        elif as_json:
            typer.echo(json.dumps(_doc(query, term, versions), indent=2, ensure_ascii=False))
        else:
            _print_match(term, versions)
    if any(isinstance(t, UnknownTermError) for t in found.values()):
        raise typer.Exit(1)


def _resolve(query: str, searched: tuple[str, ...]) -> ResolvedTerm | UnknownTermError:
    """The term ``query`` names, or why none does (an ambiguous name is refused: exit 2)."""
    from atlasprep.ontology import resolve_term

    try:
        return resolve_term(query, searched)
    except UnknownTermError as exc:
        return exc


def _doc(query: str, term: ResolvedTerm, versions: dict[str, str]) -> dict[str, object]:
    return {
        "query": query,
        "match": term.to_json(),
        "schema_version": SCHEMA_VERSION,
        "ontology_versions": versions,
    }


_TSV_COLUMNS = ("query", "term_id", "label", "ontology", "matched_by", "n_descendants")


def _print_tsv(found: dict[str, ResolvedTerm | UnknownTermError]) -> None:
    """One row per query; a query that matched nothing has empty term columns."""
    typer.echo("\t".join(_TSV_COLUMNS))
    for query, term in found.items():
        if isinstance(term, UnknownTermError):
            cells = [query, "", "", "", "", ""]
        else:
            cells = [query, term.term_id, term.label, term.ontology, term.how, str(term.n_descendants)]
        typer.echo("\t".join(c.replace("\t", " ") for c in cells))


def _print_several(
    found: dict[str, ResolvedTerm | UnknownTermError],
    searched: tuple[str, ...],
    versions: dict[str, str],
    *,
    as_json: bool,
    limit: int,
) -> None:
    from atlasprep.ontology import suggest

    if as_json:
        docs = [
            _doc(query, term, versions)
            if not isinstance(term, UnknownTermError)
            else {"query": query, "match": None, "error": str(term)}
            for query, term in found.items()
        ]
        typer.echo(json.dumps(docs, indent=2, ensure_ascii=False))
        return
    table = Table(show_edge=False)
    for column in ("query", "term", "label", "ontology", "matched by", "descendants"):
        table.add_column(column)
    for query, term in found.items():
        if isinstance(term, UnknownTermError):
            closest = "; ".join(
                f"{label} ({tid})" for label, tid in suggest(query, searched, n=min(limit, 3))
            )
            table.add_row(
                escape(query), "-", escape(f"no match; closest: {closest}" if closest else "no match")
            )
        else:
            table.add_row(
                escape(query),
                term.term_id,
                escape(term.label),
                term.ontology,
                term.how,
                f"{term.n_descendants:,}",
            )
    out_console.print(table)
    out_console.print(_provenance(versions), style="dim")


def _searched(ontology: list[str]) -> tuple[str, ...]:
    from atlasprep.ontology import get_parser

    supported = {name.lower(): name for name in get_parser().cxg_schema.supported_ontologies}
    chosen = []
    for name in ontology:
        if name.lower() not in supported:
            raise UsageError(
                f"--ontology {name!r} is not an ontology the pinned schema ships; "
                f"choose from {', '.join(sorted(supported.values()))}"
            )
        chosen.append(supported[name.lower()])
    return tuple(dict.fromkeys(chosen)) or DEFAULT_ONTOLOGIES


def _ontology(term_id: str) -> str:
    from atlasprep.ontology import get_parser

    prefix = term_id.partition(":")[0]  # AfPO terms ship inside HANCESTRO
    return str(get_parser().cxg_schema.imported_ontologies.get(prefix, prefix))


def _provenance(versions: dict[str, str]) -> str:
    releases = ", ".join(f"{name} {release}" for name, release in versions.items())
    return f"CELLxGENE schema {SCHEMA_VERSION}: {releases}"


def _print_match(term: ResolvedTerm, versions: dict[str, str]) -> None:
    table = Table(show_header=False, show_edge=False)
    table.add_column(style="dim")
    table.add_column()
    for key, value in (
        ("term", term.term_id),
        ("label", term.label),
        ("ontology", term.ontology),
        ("matched by", term.how),
        ("descendants", f"{term.n_descendants:,}"),
    ):
        table.add_row(key, escape(value))
    out = out_console
    out.print(table)
    out.print(_provenance({term.ontology: versions[term.ontology]}), style="dim")


def _no_match(
    query: str,
    message: str,
    closest: tuple[tuple[str, str], ...],
    versions: dict[str, str],
    *,
    as_json: bool,
) -> None:
    if as_json:
        doc = {
            "query": query,
            "match": None,
            "error": message,
            "suggestions": [
                {"label": label, "term_id": term_id, "ontology": _ontology(term_id)}
                for label, term_id in closest
            ],
            "schema_version": SCHEMA_VERSION,
            "ontology_versions": versions,
        }
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    out = out_console
    # The reason (no such label / deprecated ID / wrong ontology) first; it is the result here.
    out.print(escape(message.partition("; did you mean")[0]))
    if closest:
        table = Table(title="closest labels", show_edge=False)
        for column in ("term ID", "label", "ontology"):
            table.add_column(column)
        for label, term_id in closest:
            table.add_row(term_id, escape(label), _ontology(term_id))
        out.print(table)
    out.print(_provenance(versions), style="dim")
