"""Which organism a dataset is, when ``organism`` is not given: what the file states (``uns`` or
an obs column, as CELLxGENE files and older schemas do), else its Ensembl IDs (``ENSMUSG`` or
``ENSG``, in var's index or any var column), else the style of its gene symbols (mouse
``Cd4``, human ``CD4``), and only then Homo sapiens, with a warning. A harmonized file's genes
and ``organism_ontology_term_id`` follow from it, so it is never assumed in silence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlasprep.errors import InputFormatError, UsageError
from atlasprep.harmonize._slice import opened
from atlasprep.harmonize.labels import organism_key

__all__ = ["infer_organism"]

log = logging.getLogger("atlasprep.harmonize")

_OBS_COLUMNS = ("organism_ontology_term_id", "organism")
_UNS_KEYS = ("organism_ontology_term_id", "organism")
_MOUSE_SYMBOL = re.compile(r"^[A-Z][a-z][a-z0-9]*$|^Gm\d+$|^\d+[A-Z]\d+Rik$")  # Cd4, Ptprc, Gm1234
_HUMAN_SYMBOL = re.compile(r"^[A-Z][A-Z0-9-]*$")  # CD4, PTPRC, HLA-A
_SAMPLE = 5_000  # names looked at, spread over var


def infer_organism(
    given: str | None, path: Path, obs: pd.DataFrame, var: pd.DataFrame, names: Sequence[str]
) -> str:
    """``homo_sapiens`` or ``mus_musculus``: ``given`` (a label, an NCBITaxon ID) wins, with a
    warning where the file states another; else the first evidence the module lists."""
    stated = _stated(path, obs)
    if given:
        key = organism_key(given)
        if stated is not None and stated[0] != key:
            log.warning(
                "organism %s is given, but %s states %s; harmonizing as %s", given, *stated[1:], given
            )
        return key
    if stated is not None:
        log.info("organism: %s, as %s states", stated[2], stated[1])
        return stated[0]
    mouse, human = _ensembl_ids(var, names)
    if mouse or human:
        return "mus_musculus" if mouse > human else "homo_sapiens"
    style = _symbol_style(names)
    if style is not None:
        key, examples = style
        mouse_style = key == "mus_musculus"
        (log.warning if mouse_style else log.info)(
            "no organism given or stated in the file, and no Ensembl IDs in var: its gene symbols are "
            "%s-style (%s), so it is harmonized as %s; set organism if it is not",
            "mouse" if mouse_style else "human",
            ", ".join(examples),
            "Mus musculus" if mouse_style else "Homo sapiens",
        )
        return key
    log.warning(
        "no organism given or stated in the file, and neither Ensembl IDs nor gene symbols of a known "
        "style in var: assuming Homo sapiens; set organism if it is not"
    )
    return "homo_sapiens"


def _stated(path: Path, obs: pd.DataFrame) -> tuple[str, str, str] | None:
    """(key, where, value) of the organism the file states, if it states exactly one."""
    for key in _UNS_KEYS:
        value = _uns_text(path, key)
        if value:
            return _key(value, f"uns['{key}']"), f"uns['{key}']", value
    for column in _OBS_COLUMNS:
        if column in obs.columns:
            values = obs[column].dropna().astype(str).unique()
            if len(values) == 1:
                where = f"obs column {column!r}"
                return _key(values[0], where), where, str(values[0])
            if len(values) > 1:
                named = ", ".join(sorted(values)[:3])
                log.warning("obs column %r names several organisms (%s); it is not used", column, named)
    return None


def _key(value: str, where: str) -> str:
    try:
        return organism_key(value)
    except UsageError:
        raise InputFormatError(
            f"{where} states {value}: atlasprep harmonizes Homo sapiens and Mus musculus"
        ) from None


def _uns_text(path: Path, key: str) -> str | None:
    """``uns[key]`` of an AnnData file when it is one string (None otherwise, or unreadable)."""
    try:
        with opened(path) as handle:
            if "uns" not in handle or key not in handle["uns"]:
                return None
            value: Any = handle["uns"][key]
            value = value[()] if hasattr(value, "shape") and value.shape == () else None
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.strip() or None if isinstance(value, str) else None


def _ensembl_ids(var: pd.DataFrame, names: Sequence[str]) -> tuple[int, int]:
    """How many mouse and human Ensembl gene IDs var holds, in the names and in any column."""
    columns = [pd.Index(names)]
    columns += [
        pd.Index(var[c])
        for c in var.columns
        if var[c].dtype == object or pd.api.types.is_string_dtype(var[c])
    ]
    columns.append(pd.Index(var.index))
    mouse = human = 0
    for values in columns:
        text = pd.Series(values.astype(str))
        m = int(text.str.startswith("ENSMUSG").sum())
        h = int(text.str.startswith("ENSG").sum())
        if m + h > max(mouse, human):
            mouse, human = m, h
    return mouse, human


def _symbol_style(names: Sequence[str]) -> tuple[str, list[str]] | None:
    """The organism whose symbol style most of the names follow (a clear majority of those that
    follow either), with a few examples."""
    step = max(1, len(names) // _SAMPLE)
    sample = [str(n) for n in names[::step]]
    mouse = [n for n in sample if _MOUSE_SYMBOL.match(n)]
    human = [n for n in sample if _HUMAN_SYMBOL.match(n) and not n.isdigit()]
    if not mouse and not human:
        return None
    if len(mouse) > 4 * len(human):
        return "mus_musculus", mouse[:3]
    if len(human) > 4 * len(mouse):
        return "homo_sapiens", human[:3]
    return None
