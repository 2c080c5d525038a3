"""TOML recipes: one file names a whole corpus build, loaded into the library's own configs.

A recipe's tables are the stages' configs, so a recipe can say whatever the command line can,
and nothing it cannot; each key is its flag's name (:data:`FLAG_KEYS` maps the few that name a
config field otherwise)::

    name = "demo"
    [source]      # where cells come from: census | census_uri | input, organism, per_group,
                  # max_cells, seed, genes (a gene-list file or a list of IDs), batch_size
    [filter]      # which cells: cell_type, tissue, tissue_general, assay, disease, …, all_data
    [harmonize]   # optional: map = {column = "field"}, set = {field = "value"}, mapping, …
    [slice]       # optional: out = "cells.h5ad" (an AnnData slice next to the store), max_cells, …
    [tokenize]    # optional: scheme, tie_order, max_len, context, split_by, split, format, …
    [train]       # optional, after [tokenize]: steps, batch_size, sampling, … (needs torch)

``[source]`` and ``[filter]`` are one :class:`~atlasprep.sources.SourceSpec`. A ``[slice]``
applies it (its own sampling keys, if any, replace the source's); a ``[tokenize]`` after a
``[slice]`` reads the slice, so the token store holds exactly the slice's cells and genes.

Every key is checked: an unknown one is an error naming the file, the table and the key, with
the closest valid key. The files a recipe reads (inputs, census_uri, dictionaries, mappings)
are relative to the recipe file, or absolute (a local Census copy). What it writes stays inside
the run's output directory: an output it names (``[slice] out``) is relative to that directory,
and an absolute path, a ``..`` or a symlink leading out of it is refused. The values are checked
when :func:`atlasprep.run.plan_recipe` builds the stages' configs, before anything runs or is
opened. ``--set table.key=value`` overrides one value (parsed as a TOML value, else taken as a
string).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib
import inspect
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from atlasprep.errors import UsageError
from atlasprep.harmonize.api import HarmonizeConfig
from atlasprep.slice.api import SliceConfig
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.api import TokenizeConfig
from atlasprep.train.masked import TrainConfig

__all__ = ["FLAG_KEYS", "Recipe", "RecipeError", "load_recipe"]


class RecipeError(UsageError):
    """A recipe that cannot be loaded (exit 2)."""


# table -> (config classes, keys the pipeline sets itself, recipe-only keys)
_TABLES: dict[str, tuple[tuple[type, ...], frozenset[str], frozenset[str]]] = {
    "source": ((SourceSpec,), frozenset({"filter", "genes"}), frozenset({"genes"})),
    "filter": ((CellFilter,), frozenset({"primary_only"}), frozenset({"all_data"})),
    "harmonize": (
        (HarmonizeConfig,),
        frozenset({"source", "out", "overwrite", "report", "maps", "sets"}),
        frozenset({"map", "set", "counts_layer"}),
    ),
    "slice": (  # the slice's output, and its own sampling; the cells come from [source], [filter]
        (SliceConfig, SourceSpec),
        frozenset({"source", "out", "dry_run", "by", "overwrite"})
        | frozenset({"census", "census_uri", "inputs", "organism", "layer", "filter", "genes"}),
        frozenset({"out"}),
    ),
    "tokenize": (
        (TokenizeConfig,),
        frozenset({"source", "out", "overwrite", "shard_bytes"}),
        frozenset({"shard_size"}),
    ),
    "train": ((TrainConfig,), frozenset({"store", "out"}), frozenset()),  # on [tokenize]'s store
}
# [align.<step>] -> the library function whose keyword arguments the table gives
# (function, keys the pipeline sets, required keys the pipeline can fill from [source] inputs)
_ALIGN: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    "barcodes": ("atlasprep.align.barcodes:align_barcodes", frozenset({"out", "overwrite"}), frozenset()),
    "ccf": ("atlasprep.align.ccf:register_file", frozenset({"out", "overwrite"}), frozenset({"spatial"})),
}
_TOP = ("name", "description", "out", "align", *_TABLES)
# A recipe's keys are the flags' names (--counts-layer: counts_layer) where a config field is
# named otherwise: table -> {key: field}. The field's own name is refused, naming the key.
FLAG_KEYS: dict[str, dict[str, str]] = {
    "source": {"input": "inputs", "counts_layer": "layer"},
    "tokenize": {"no_shuffle": "shuffle"},
    "align.ccf": {"pixel_size": "pixel_size_um", "section_z": "section_z_mm", "bin_size": "bin_size_mm"},
}
_INVERTED = frozenset({("tokenize", "no_shuffle")})  # a flag that says the field's opposite
# fields a key of another shape gives (the flag's): field -> how to write it
_FOLDED = {("tokenize", "segment_max_len"): 'max_len = "rna=1536,atac=512", as --max-len'}


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """A loaded recipe: raw tables, checked, with paths resolved."""

    path: Path
    name: str
    description: str
    out: Path
    tables: Mapping[str, Mapping[str, Any]]  # table -> key -> value (only the tables given)

    def has(self, table: str) -> bool:
        return table in self.tables

    def table(self, name: str) -> dict[str, Any]:
        return dict(self.tables.get(name, {}))


def load_recipe(path: Path, overrides: tuple[str, ...] = (), out: Path | None = None) -> Recipe:
    """Read, override (``table.key=value``) and check a recipe file."""
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    for item in overrides:
        _override(path, data, item)
    for key, value in data.items():
        if key not in _TOP:
            raise RecipeError(_unknown(path, "top level", key, _TOP))
        if key in _TABLES and not isinstance(value, dict):
            raise RecipeError(f"{path}: [{key}] must be a table")
    tables = {name: _checked(path, name, data[name]) for name in _TABLES if name in data}
    for step, values in dict(data.get("align", {})).items():
        if step not in _ALIGN:
            raise RecipeError(_unknown(path, "[align]", step, _ALIGN))
        if not isinstance(values, dict):
            raise RecipeError(f"{path}: [align.{step}] must be a table")
        tables[f"align.{step}"] = _checked_call(path, f"align.{step}", values, *_ALIGN[step])
    if "tokenize" not in tables and "slice" not in tables and "harmonize" not in tables:
        raise RecipeError(f"{path}: a recipe needs at least one of [harmonize], [slice], [tokenize]")
    name = str(data.get("name") or path.stem)
    if any(sep in name for sep in ("/", "\\", "\x00")) or name in (".", ".."):
        # the default output directory is out/<name>, beside the recipe: a name is no path
        raise RecipeError(f"{path}: name = {name!r}: a name, not a path (no '/', '\\' or '..')")
    base = Path(str(data.get("out") or f"out/{name}"))
    return Recipe(
        path=path,
        name=name,
        description=str(data.get("description", "")),
        out=out if out is not None else Path(os.path.normpath(path.parent / base)),
        tables=tables,
    )


def _override(path: Path, data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected table.key=value (e.g. tokenize.max_len=1024)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string
    *tables, last = key.strip().split(".")
    node = data
    for table in tables:
        node = node.setdefault(table, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {item!r}: {table} is not a table in {path}")
    node[last] = value


def _checked(path: Path, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Each key known to the table's config, each value of its type; paths made absolute."""
    classes, pipeline_keys, extra = _TABLES[table]
    hints = {k: v for cls in reversed(classes) for k, v in typing.get_type_hints(cls).items()}
    names = dict.fromkeys(f.name for cls in classes for f in fields(cls))
    allowed = [name for name in names if name not in pipeline_keys] + sorted(extra)
    out: dict[str, Any] = {}
    for key, value in _as_fields(path, table, values, allowed):
        if key in extra:
            out[key] = _extra_value(path, table, key, value)
        elif (table, key) == ("tokenize", "max_len") and isinstance(value, str):
            budgets = _budgets(path, value)
            if "rna" in budgets:
                out["max_len"] = budgets.pop("rna")
            out["segment_max_len"] = tuple(budgets.items())
        else:
            out[key] = _coerce(path, table, key, value, hints[key])
            if (table, _key_of(table, key)) in _INVERTED:
                out[key] = not out[key]
    return out


def _key_of(table: str, field: str) -> str:
    return {f: k for k, f in FLAG_KEYS.get(table, {}).items()}.get(field, field)


def _as_fields(
    path: Path, table: str, values: Mapping[str, Any], allowed: list[str]
) -> Iterator[tuple[str, Any]]:
    """(config field, value) of each key, the keys being the flags' names; a field's own name
    where the key differs, or a key that is not allowed, is refused naming the key to use."""
    flags = FLAG_KEYS.get(table, {})
    keys = [_key_of(table, name) for name in allowed if (table, name) not in _FOLDED]
    for key, value in values.items():
        if (table, key) in _FOLDED:
            raise RecipeError(f"{path}: [{table}] {key}: give it as {_FOLDED[table, key]}")
        if key in flags.values() and key not in flags:
            raise RecipeError(
                f"{path}: [{table}] {key}: the key is {_key_of(table, key)} now (the flag's name, "
                f"--{_key_of(table, key).replace('_', '-')}); rename it"
            )
        if key not in keys:
            raise RecipeError(_unknown(path, f"[{table}]", key, keys))
        yield flags.get(key, key), value


def _budgets(path: Path, text: str) -> dict[str, int]:
    from atlasprep.tokenize.config import parse_max_len

    try:
        return parse_max_len(text)
    except UsageError as exc:
        raise RecipeError(f"{path}: [tokenize] {exc}") from None


def _checked_call(
    path: Path,
    table: str,
    values: Mapping[str, Any],
    target: str,
    pipeline_keys: frozenset[str],
    filled: frozenset[str],
) -> dict[str, Any]:
    """A table of keyword arguments for a library function, checked against its signature."""
    module, name = target.split(":")
    function = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(function)
    parameters = inspect.signature(function).parameters
    allowed = [p for p in parameters if p not in pipeline_keys]
    out: dict[str, Any] = {}
    for key, value in _as_fields(path, table, values, allowed):
        out[key] = _coerce(path, table, key, value, hints[key])
    required = [p for p in allowed if parameters[p].default is inspect.Parameter.empty]
    missing = [p for p in required if p not in out and p not in filled]
    if missing:
        raise RecipeError(f"{path}: [{table}] needs {', '.join(missing)}")
    return out


def _extra_value(path: Path, table: str, key: str, value: Any) -> Any:
    if key in ("map", "set"):
        if not isinstance(value, dict) or not all(isinstance(v, str | bool | int) for v in value.values()):
            raise RecipeError(
                f'{path}: [{table}] {key} must be a table of strings, e.g. {{celltype = "cell_type"}}'
            )
        return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    if key in ("all_data",):
        return _coerce(path, table, key, value, bool)
    if key == "genes":  # a gene-list file, or the IDs themselves
        return _coerce(path, table, key, value, tuple[str, ...] if isinstance(value, list) else Path)
    if key == "out":  # an output: relative to the run's directory (the pipeline checks it stays inside)
        if not isinstance(value, str) or not value:
            raise RecipeError(
                f"{path}: [{table}] {key} must be a path string, relative to the output directory"
            )
        return value
    return _coerce(path, table, key, value, str)


def _coerce(path: Path, table: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the config field's type (Path, tuple, int, float, bool, str, or None-able)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(path, table, key, value, options[0])
        for option in options:  # e.g. str | None, tuple | None
            try:
                return _coerce(path, table, key, value, option)
            except RecipeError:
                continue
        raise RecipeError(f"{path}: [{table}] {key} = {value!r} has the wrong type")
    if hint is Path:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: [{table}] {key} must be a path string")
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else Path(os.path.normpath(path.parent / candidate))
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(path, table, key, v, args[0]) for v in items)
        if len(items) != len(args):
            raise RecipeError(f"{path}: [{table}] {key} needs {len(args)} values, got {len(items)}")
        return tuple(_coerce(path, table, key, v, a) for v, a in zip(items, args, strict=True))
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(repr, args))
            raise RecipeError(f"{path}: [{table}] {key} = {value!r}: choose one of {choices}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        if value not in list(hint):
            choices = ", ".join(repr(str(c)) for c in hint)
            raise RecipeError(f"{path}: [{table}] {key} = {value!r}: choose one of {choices}")
        return hint(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: [{table}] {key} must be true or false")
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if dataclasses.is_dataclass(hint):
        raise RecipeError(f"{path}: [{table}] {key} is set by the recipe's own tables")
    raise RecipeError(f"{path}: [{table}] {key} = {value!r} is not a {getattr(hint, '__name__', hint)}")


def _unknown(path: Path, where: str, key: str, allowed: Any) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{path}: {where} has no key {key!r}{hint} (valid: {', '.join(allowed)})"
