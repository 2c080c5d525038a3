"""Whole pipelines from TOML recipes (`atlasprep run`), locally or on Dask."""

from atlasprep.run.dask import DaskRunner
from atlasprep.run.pipeline import run_recipe
from atlasprep.run.plan import Plan, StagePlan, plan_recipe
from atlasprep.run.recipe import Recipe, RecipeError, load_recipe

__all__ = [
    "DaskRunner",
    "Plan",
    "Recipe",
    "RecipeError",
    "StagePlan",
    "load_recipe",
    "plan_recipe",
    "run_recipe",
]
