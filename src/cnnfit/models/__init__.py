"""The model zoo. Importing this package registers every family."""

from cnnfit.models import lenet, resnet, small  # noqa: F401  (registration side effect)
from cnnfit.models.registry import builder_kwargs, check_name, create, list_models, min_size, register

__all__ = ["builder_kwargs", "check_name", "create", "list_models", "min_size", "register"]
