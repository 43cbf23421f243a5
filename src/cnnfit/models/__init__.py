"""The model zoo. Importing this package registers every family."""

from cnnfit.models import (airnet, alexnet, efficientnet_lite, inception, lenet, mobilenet, resnet,  # noqa: F401
                           small, vgg)  # (registration)
from cnnfit.models.imagenet import (has_imagenet_weights, imagenet_classes, imagenet_models, imagenet_offline,
                                    imagenet_weights)
from cnnfit.models.weights import (CHANNELS, MAX_IMGSZ, MIN_IMGSZ, InitReport, from_checkpoint, load_pretrained,
                                   read_state_dict)
from cnnfit.models.registry import builder_kwargs, check_name, create, list_models, min_size, options_of, register

__all__ = ["CHANNELS", "MAX_IMGSZ", "MIN_IMGSZ", "InitReport", "builder_kwargs", "check_name", "create",
           "from_checkpoint", "has_imagenet_weights", "imagenet_classes", "imagenet_models", "imagenet_offline", "imagenet_weights",
           "list_models", "load_pretrained", "min_size", "options_of", "read_state_dict", "register"]
