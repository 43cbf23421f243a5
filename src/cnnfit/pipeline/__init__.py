"""The pipeline: a run from settings to scores (`train`), and what reads a finished run (`evaluate`, `predict`).

    train.py     resolve -> prepare -> build -> fit -> finish, top to bottom
    resolve.py   every auto rule and its reason        prepare.py  data checks, split, data report
    evaluate.py  test-split scores of best.pt           predict.py  predictions for new files
    rundir.py    the one owner of a run directory       resume.py   what resume=RUN may continue
    repeats.py   N seeds, mean and std                  summary.py  the table a run logs before training
"""

from cnnfit.pipeline.evaluate import evaluate
from cnnfit.pipeline.predict import predict
from cnnfit.pipeline.prepare import inspect
from cnnfit.pipeline.rundir import Run
from cnnfit.pipeline.train import lr_find, train

__all__ = ["Run", "evaluate", "inspect", "lr_find", "predict", "train"]
