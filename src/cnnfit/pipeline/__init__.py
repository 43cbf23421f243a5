"""The pipeline: a run from settings to scores (`train`), and what reads a finished run (`evaluate`, `predict`,
`embed`)."""

from cnnfit.pipeline.embed import embed
from cnnfit.pipeline.evaluate import evaluate
from cnnfit.pipeline.predict import predict
from cnnfit.pipeline.prepare import inspect
from cnnfit.pipeline.rundir import Run
from cnnfit.pipeline.train import lr_find, train

__all__ = ["Run", "embed", "evaluate", "inspect", "lr_find", "predict", "train"]
