"""The package's front door: its public names load on first use, so importing one part stays cheap."""

import subprocess
import sys

import pytest

import cnnfit


def test_models_alone_do_not_load_the_pipeline_or_scikit_learn():
    code = ("import sys, cnnfit.models; "
            "print(*(m in sys.modules for m in ('cnnfit.pipeline', 'sklearn', 'pydantic', 'cnnfit.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"] * 4


def test_public_names_load_on_first_use_and_unknown_ones_raise():
    from cnnfit import Config, train  # noqa: F401  (the from-import path goes through __getattr__ too)

    assert set(cnnfit.__all__) <= set(dir(cnnfit))
    assert cnnfit.train is train and cnnfit.Config().train.epochs >= 1
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        cnnfit.trian  # noqa: B018
