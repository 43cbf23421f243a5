"""The training engine: fit, infer, State, checkpoints, optimizers and schedules."""

from cnnfit.engine import finetune
from cnnfit.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnfit.engine.loop import fit, infer
from cnnfit.engine.optim import build_optimizer, make_schedule, param_groups
from cnnfit.engine.state import State

__all__ = ["State", "build_optimizer", "finetune", "fit", "infer", "load_checkpoint", "make_schedule", "param_groups", "save_checkpoint"]
