"""cnnfit: train convolutional neural networks for image classification, end to end.

    import cnnfit
    run = cnnfit.train(data="digits", model="simplecnn", epochs=5)
    run.accuracy, run.dir
"""

from cnnfit.config import Config, load_config
from cnnfit.errors import CnnfitError
from cnnfit.pipeline import Run, evaluate, predict, train

__all__ = ["CnnfitError", "Config", "Run", "evaluate", "load_config", "predict", "train"]
__version__ = "0.1.0"
