"""Data: sources -> cached uint8 ImageSet -> split -> DeviceLoader."""

from cnnfit.data.cache import load_imageset, split_stats
from cnnfit.data.decode import DecodeError, decode_image, is_image_name, map_images
from cnnfit.data.imageset import SPLITS, ImageSet, split_indices, subsample
from cnnfit.data.loader import DeviceLoader, channel_stats, read_rows
from cnnfit.data.sources import SourceRef, data_root, resolve

__all__ = ["SPLITS", "DecodeError", "DeviceLoader", "ImageSet", "SourceRef", "channel_stats", "data_root",
           "decode_image", "is_image_name", "load_imageset", "map_images", "read_rows", "resolve", "split_indices", "split_stats",
           "subsample"]
