"""The pipeline: a run from settings to scores (`train`; one per fold: `cv`), and what reads a finished run
(`evaluate`, `predict`, `embed`)."""

from cnnfit.pipeline.cv import CVResult, cv
from cnnfit.pipeline.embed import embed
from cnnfit.pipeline.evaluate import evaluate
from cnnfit.pipeline.labels import inspect
from cnnfit.pipeline.predict import predict
from cnnfit.pipeline.rundir import Run
from cnnfit.pipeline.train import lr_find, train

__all__ = ["CVResult", "Run", "cv", "embed", "evaluate", "inspect", "lr_find", "predict", "train"]
