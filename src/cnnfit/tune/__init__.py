"""Hyperparameter search on Optuna: every trial an ordinary cnnfit run."""

from cnnfit.tune.search import Pruning, TuneResult, tune
from cnnfit.tune.space import Dist, grid_points, parse_space

__all__ = ["Dist", "Pruning", "TuneResult", "grid_points", "parse_space", "tune"]
