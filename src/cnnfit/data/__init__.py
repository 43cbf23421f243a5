"""Data: sources -> cached uint8 ImageSet -> split -> DeviceLoader."""

from cnnfit.data.cache import load_imageset, split_stats
from cnnfit.data.decode import DecodeError, decode_image, is_image_name, map_images
from cnnfit.data.imageset import (SPLITS, TASKS, ImageSet, check_task, class_counts, label_text, split_indices, strata,
                                  subsample, task_of)
from cnnfit.data.loader import DeviceLoader, channel_stats, normalize, read_rows
from cnnfit.data.sources import SourceRef, data_root, resolve

__all__ = ["SPLITS", "TASKS", "DecodeError", "DeviceLoader", "ImageSet", "SourceRef", "channel_stats", "check_task",
           "class_counts", "data_root", "decode_image", "is_image_name", "label_text", "load_imageset", "map_images",
           "normalize", "read_rows", "resolve", "split_indices", "split_stats", "strata", "subsample", "task_of"]
