"""Paths of inputs, parsed without opening them (no AnnData import: the CLI's start-up)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["missing_file", "split_modality"]


def split_modality(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``file.h5mu:rna`` → (file.h5mu, "rna"); any other path → (path, None). The one parser of
    ``FILE:modality``: a path that exists is never split, and ``:name`` after another existing
    file is split too (``a.h5ad:rna`` → (a.h5ad, "rna")), so its reader can refuse it by name;
    an empty name comes back as ``""``."""
    text = os.fspath(spec)
    head, sep, tail = text.rpartition(":")
    if not sep or "/" in tail or Path(text).exists():
        return Path(text), None
    if head.endswith(".h5mu") or Path(head).exists():
        return Path(head), tail
    return Path(text), None


def missing_file(path: str | os.PathLike[str], command: str) -> str:
    """Why ``path`` cannot be read by ``command`` (which takes one AnnData file): no such file,
    or a MuData modality (``FILE.h5mu:rna``), with the command that makes it a file."""
    file, modality = split_modality(path)
    if modality and file.exists():
        return (
            f"{path}: {command} reads an AnnData file (h5ad or zarr), not a MuData modality; write "
            f"the modality as one first: atlasprep slice --input {path} --all-data --out {modality}.h5ad"
        )
    return f"{path}: no such file or directory"
