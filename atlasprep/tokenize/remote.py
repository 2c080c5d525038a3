"""`tokenize --out s3://bucket/prefix`: a token store built locally, then uploaded, manifest last.

The store is assembled in a staging directory (:func:`staging_dir`, under ``$TMPDIR``: it needs
the room a local build of the store needs) by :func:`~atlasprep.tokenize.api.tokenize_cells`,
so its bytes are a local build's; :mod:`atlasprep.shard.publish` then uploads it under the
prefix with the local ownership rules, and a re-run after a killed build keeps the shards that
are already there. The prefix is checked before any cell is read.
"""

from __future__ import annotations

import dataclasses

from atlasprep._io import remove_path
from atlasprep._remote import open_root, staging_dir
from atlasprep.shard.publish import plan_remote_claim
from atlasprep.sources import ProgressCallback
from atlasprep.tokenize.api import tokenize_cells
from atlasprep.tokenize.config import TokenizeConfig, TokenizeResult
from atlasprep.tokenize.jobs import JobRunner
from atlasprep.tokenize.record import build_spec

__all__ = ["staging_dir", "tokenize_to_url"]


def tokenize_to_url(
    config: TokenizeConfig,
    url: str,
    progress: ProgressCallback | None = None,
    *,
    runner: JobRunner | None = None,
) -> TokenizeResult:
    """:func:`~atlasprep.tokenize.api.tokenize_cells` into object storage (``s3://…`` or any
    fsspec URL): the same store, byte for byte, under ``url``. ``config.out`` is not used (the
    store is staged in :func:`staging_dir`); ``config.overwrite`` replaces a complete store there."""
    root = open_root(url)
    claim = plan_remote_claim(root, build_spec(config), overwrite=config.overwrite)  # before any work
    staging = staging_dir(url)
    try:
        result = tokenize_cells(
            dataclasses.replace(config, out=staging, overwrite=True), progress, runner=runner
        )
        claim.claim().publish(staging, result.manifest)
    finally:
        if staging.is_dir() and (staging / "manifest.json").is_file():  # a complete store of ours
            remove_path(staging)
    return result
