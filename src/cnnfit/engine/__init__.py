"""The training engine: fit, infer, State, checkpoints, losses, scores, optimizers and schedules."""

from cnnfit.engine import features, finetune, losses, scores
from cnnfit.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnfit.engine.compile import compile_checked
from cnnfit.engine.loop import StepOptions, autocast, fit, infer
from cnnfit.engine.lr_find import LRFind, lr_range_test
from cnnfit.engine.optim import build_optimizer, decoupled_sgd, make_schedule, param_groups, scale_lr
from cnnfit.engine.state import Batches, State

__all__ = ["Batches", "LRFind", "State", "StepOptions", "autocast", "build_optimizer", "compile_checked",
           "decoupled_sgd", "features", "finetune", "fit", "infer", "load_checkpoint", "losses", "lr_range_test",
           "make_schedule", "param_groups", "save_checkpoint", "scale_lr", "scores"]
