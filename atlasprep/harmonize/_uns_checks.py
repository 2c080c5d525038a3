"""The uns checks of CELLxGENE schema 7.1.0 (the ``uns`` section of its text, as cellxgene-schema
7.1.2 enforces it): ``title``, ``default_embedding``, ``batch_condition``,
``X_approximate_distribution``, ``<column>_colors``, reserved and deprecated keys, no empty values,
and ``spatial`` only for spatial assays. The organism key is checked with the obs organism rules
(:func:`._obs_checks.check_organism`).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd

from atlasprep.harmonize._report import Found, Profile
from atlasprep.harmonize._schema_rules import (
    APPROXIMATE_DISTRIBUTIONS,
    DEPRECATED_UNS,
    PORTAL_COLUMNS,
    RESERVED_UNS,
)

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def _where(key: str) -> str:
    return f"uns['{key}']"


def check_uns(
    uns: Mapping[str, Any],
    obs: pd.DataFrame,
    obsm_keys: Collection[str],
    profile: Profile,
    problems: Found,
) -> None:
    n = len(obs)
    if "title" in uns:
        _check_text(uns["title"], "title", problems, n)
    elif profile != Profile.atlasprep:
        problems.add(_where("title"), "required key is missing (the dataset's title)", n)
    if "default_embedding" in uns:
        value = uns["default_embedding"]
        if _check_text(value, "default_embedding", problems, n) and value not in obsm_keys:
            problems.add(_where("default_embedding"), "must be a key of obsm", n, (str(value),))
    if "batch_condition" in uns:
        value = uns["batch_condition"]
        if not isinstance(value, list | np.ndarray):
            problems.add(_where("batch_condition"), "must be a list of obs columns", n, (str(value),))
        else:
            missing = [str(v) for v in value if v not in obs.columns]
            if missing:
                problems.add(_where("batch_condition"), "names columns that are not in obs", n, missing)
    if "X_approximate_distribution" in uns:
        value = uns["X_approximate_distribution"]
        key = "X_approximate_distribution"
        if _check_text(value, key, problems, n) and value not in APPROXIMATE_DISTRIBUTIONS:
            problems.add(_where(key), f"not one of {', '.join(APPROXIMATE_DISTRIBUTIONS)}", n, (value,))
    for key in RESERVED_UNS:
        if key in uns:
            problems.add(_where(key), "reserved key: CELLxGENE writes it on upload (drop it)", n)
    for key in DEPRECATED_UNS:
        if key in uns:
            problems.add(_where(key), "deprecated key: schema 7 no longer reads it (drop it)", n)
    for key, value in uns.items():
        if _empty(value):
            problems.add(_where(key), "cannot be an empty value", n)
        elif key.endswith("_colors"):
            _check_colors(key, value, obs, problems)


def _check_text(value: Any, key: str, problems: Found, n: int) -> bool:
    """A string without leading, trailing or double spaces."""
    if not isinstance(value, str):
        problems.add(_where(key), f"must be a string, not {type(value).__name__}", n, (str(value),))
        return False
    if value != value.strip() or " ".join(value.split()) != value.strip():
        problems.add(_where(key), "has leading, trailing or double spaces", n, (repr(value),))
        return False
    return True


def _empty(value: Any) -> bool:
    if value is None or isinstance(value, bool | np.bool_ | numbers.Number):
        return False
    if isinstance(value, np.ndarray):
        return value.size == 0
    return hasattr(value, "__len__") and len(value) == 0


def _check_colors(key: str, value: Any, obs: pd.DataFrame, problems: Found) -> None:
    """uns['<column>_colors']: a categorical obs column, an array of strings, enough colours, all
    hex or all CSS4 names."""
    from matplotlib import colors as mcolors  # only files with colours pay for the import

    n, column = len(obs), key.removesuffix("_colors")
    categorical = column in obs and isinstance(obs[column].dtype, pd.CategoricalDtype)
    if not categorical or obs[column].nunique() == 0:
        hint = f" (annotate {column}_ontology_term_id_colors instead)" if column in PORTAL_COLUMNS else ""
        problems.add(_where(key), f"has no categorical obs column {column!r}{hint}", n)
        return
    if not isinstance(value, np.ndarray) or not all(isinstance(c, str) for c in value):
        problems.add(_where(key), "must be an array of colour strings", n)
        return
    needed = int(obs[column].nunique())
    if len(value) < needed:
        problems.add(_where(key), f"needs at least {needed} colours, one per value of {column}", n)
    if not (all(_HEX.match(c) for c in value) or all(c in mcolors.CSS4_COLORS for c in value)):
        problems.add(
            _where(key), "colours must be all hex (#rrggbb) or all CSS4 names", n, value[:3].tolist()
        )
