"""cnnfit: train convolutional neural networks for image classification, end to end.

    import cnnfit
    run = cnnfit.train(data="digits", model="simplecnn", epochs=5)
    run.accuracy, run.dir
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnfit.config import Config, load_config
    from cnnfit.errors import CnnfitError
    from cnnfit.pipeline import Run, cv, evaluate, predict, train
    from cnnfit.pipeline.predict import Predictions

__all__ = ["CnnfitError", "Config", "Predictions", "Run", "cv", "evaluate", "load_config", "predict", "train"]
__version__ = "0.1.0"

# a library logs and the application decides what is shown: the Python API prints nothing unless the caller
# configures logging (the `cnnfit` command attaches its own renderer)
logging.getLogger("cnnfit").addHandler(logging.NullHandler())

# loaded on first use: `import cnnfit.models` alone should not pay for the pipeline, scikit-learn and pydantic
# (about 2 s on 2 cores)
_HOME = {"CnnfitError": "cnnfit.errors", "Config": "cnnfit.config", "load_config": "cnnfit.config",
         "Run": "cnnfit.pipeline", "cv": "cnnfit.pipeline", "evaluate": "cnnfit.pipeline",
         "predict": "cnnfit.pipeline", "Predictions": "cnnfit.pipeline.predict", "train": "cnnfit.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnfit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
