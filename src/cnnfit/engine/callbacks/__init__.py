"""One callback per file; the loop calls their hooks in list order."""

from cnnfit.engine.callbacks.base import HOOKS, Callback, Monitor
from cnnfit.engine.callbacks.checkpointing import Checkpointing
from cnnfit.engine.callbacks.early_stopping import EarlyStopping
from cnnfit.engine.callbacks.freeze import Freeze
from cnnfit.engine.callbacks.history import History
from cnnfit.engine.callbacks.lookahead import Lookahead
from cnnfit.engine.callbacks.lr_schedule import LRSchedule
from cnnfit.engine.callbacks.mlflow_run import MLflowRun
from cnnfit.engine.callbacks.plateau import ReduceLROnPlateau
from cnnfit.engine.callbacks.profiler import Profile
from cnnfit.engine.callbacks.progress import ProgressBar
from cnnfit.engine.callbacks.signals import CatchSignals
from cnnfit.engine.callbacks.tensorboard import TensorBoard
from cnnfit.engine.callbacks.time_budget import TimeBudget
from cnnfit.engine.callbacks.wandb_run import WandbRun

__all__ = ["HOOKS", "Callback", "CatchSignals", "Checkpointing", "EarlyStopping", "Freeze", "History", "Lookahead",
           "LRSchedule", "MLflowRun", "Monitor", "Profile", "ProgressBar", "ReduceLROnPlateau", "TensorBoard",
           "TimeBudget", "WandbRun"]
