"""A recipe's stages as objects: each holds what it runs with and runs itself.

A pipeline calls ``stage.run(runner, progress)`` and records what it returns; it never asks a
stage what kind it is. ``config`` is what the stage's fingerprint is taken over (a changed
config reruns the stage).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from atlasprep.harmonize.api import HarmonizeConfig, harmonize
from atlasprep.slice.api import SliceConfig, slice_cells
from atlasprep.sources import ProgressCallback
from atlasprep.tokenize.api import JobRunner, TokenizeConfig, tokenize_cells
from atlasprep.train.masked import TrainConfig

__all__ = [
    "BarcodesStage",
    "CcfStage",
    "HarmonizeStage",
    "SliceStage",
    "Stage",
    "TokenizeStage",
    "TrainStage",
]


class Stage(Protocol):
    """One step of a pipeline."""

    @property
    def config(self) -> Any: ...  # each stage's own config type

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        """Do the work; what it returns goes into the stage's stamp and the resolved recipe."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class HarmonizeStage:
    config: HarmonizeConfig

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        self.config.out.parent.mkdir(parents=True, exist_ok=True)
        report = harmonize(self.config, progress=progress)
        return {"n_cells": report.n_cells, "unmapped": report.n_unmapped}


@dataclass(frozen=True, slots=True, kw_only=True)
class CcfStage:
    config: dict[str, Any]  # the keyword arguments of atlasprep.align.ccf.register_file

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        from atlasprep.align.ccf import register_file

        summary = register_file(**self.config)
        return {"n_cells": summary.n_obs, "cells_in_structures": summary.n_in_structures}


@dataclass(frozen=True, slots=True, kw_only=True)
class BarcodesStage:
    config: dict[str, Any]  # the keyword arguments of atlasprep.align.barcodes.align_barcodes

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        from atlasprep.align.barcodes import align_barcodes

        aligned = align_barcodes(**self.config)
        return {"n_cells": aligned.n_obs, "match": aligned.to_json()}


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceStage:
    config: SliceConfig

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        assert self.config.out is not None
        self.config.out.parent.mkdir(parents=True, exist_ok=True)
        sliced = slice_cells(self.config, progress=progress)
        return {"n_cells": sliced.n_cells, **census_version(sliced.source.to_json())}


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizeStage:
    config: TokenizeConfig

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        config = self.config
        if (config.out / "manifest.json").exists():
            config = replace(config, overwrite=True)  # done under another recipe: redo it
        manifest = tokenize_cells(config, progress=progress, runner=runner).manifest
        return {
            "n_cells": manifest["n_cells"],
            "n_shards": len(manifest["shards"]),
            **census_version(manifest["source"]),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainStage:
    config: TrainConfig

    def run(self, runner: JobRunner | None, progress: ProgressCallback | None) -> dict[str, Any]:
        from atlasprep.train import train_masked_gene

        def report(step: int, loss: float) -> None:
            if progress is not None:
                progress(step, self.config.steps)

        result = train_masked_gene(self.config, on_step=report)
        return {"steps": len(result.losses), "first_loss": result.losses[0], "last_loss": result.losses[-1]}


def census_version(info: dict[str, Any]) -> dict[str, Any]:
    """The dated Census build a source resolved to (SourceInfo.to_json), where it has one."""
    build = info.get("census_build")
    return {"census_version": build} if build else {}
