"""HTTP inference for a run directory or an exported .onnx: `cnnfit serve RUN`, or

    from cnnfit.serve import serve
    serve("runs/train3", port=8000, api_key_file="~/.cnnfit-key")   # or $CNNFIT_API_KEY; POST /predict, GET /model,
                                                                     # /health, / (upload page)
    serve("runs/train3", reject=True)   # "unknown" under the threshold fitted on val; also ?explain=true, POST /embed

Needs fastapi, uvicorn and python-multipart, imported here and nowhere else in cnnfit."""

try:
    import fastapi  # noqa: F401
    import python_multipart  # noqa: F401
except ImportError as exc:
    from cnnfit.errors import CnnfitError

    raise CnnfitError(f"serving needs {exc.name}: pip install fastapi uvicorn python-multipart") from None

from cnnfit.serve.app import create_app, serve
from cnnfit.serve.batching import MicroBatcher

__all__ = ["MicroBatcher", "create_app", "serve"]
