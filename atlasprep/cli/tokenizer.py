"""`atlasprep tokenizer export`: a store's tokenizer alone, for a model card to ship."""

from __future__ import annotations

from pathlib import Path

import typer

from atlasprep.cli._app import app, command, out_console

tokenizer_app = typer.Typer(
    help=(
        "The tokenizer a token store was built with: everything that turns a cell into tokens "
        "(scheme, vocabulary, gene medians and mapping, bins, highly variable genes, context tokens, "
        "paired segments). Ship it with a model; `atlasprep tokenize --tokenizer DIR` and "
        "`Tokenizer.load(DIR)` tokenize new data exactly as the corpus was.\n\n"
        "Examples:\n\n"
        "  atlasprep tokenizer export store/ --out my-model/tokenizer/"
    ),
    no_args_is_help=True,
)
app.add_typer(tokenizer_app, name="tokenizer")


@command(
    "export",
    group=tokenizer_app,
    help=(
        "Write a store's tokenizer alone into a new folder: tokenizer.json, vocab.json and the gene "
        "medians and mapping it names (checked against the store's manifest first).\n\n"
        "Examples:\n\n"
        "  atlasprep tokenizer export store/ --out my-model/tokenizer/"
    ),
)
def export_command(
    store: Path = typer.Argument(..., help="A token store (atlasprep tokenize), or a tokenizer folder."),
    out: Path = typer.Option(..., "--out", "-o", help="The new folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a tokenizer folder written before."),
) -> None:
    from atlasprep.tokenize.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(store)
    written = tokenizer.export(out, overwrite=overwrite)
    files = sorted(p.name for p in written.iterdir())
    out_console.print(
        f"{tokenizer.scheme} tokenizer ({len(tokenizer.tokens):,} tokens) → {written}: {', '.join(files)}"
    )
