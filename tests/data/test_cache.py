import os

import numpy as np

from cnnfit.data.cache import cache_root, load_imageset
from cnnfit.data.sources import resolve


def test_second_load_is_a_memmapped_hit_with_identical_content(image_folder):
    ref = resolve(str(image_folder))
    first, hit1 = load_imageset(ref, 16)
    second, hit2 = load_imageset(ref, 16)
    assert (hit1, hit2) == (False, True)
    assert isinstance(second.images, np.memmap)
    assert (np.asarray(first.images) == np.asarray(second.images)).all()
    assert second.files == first.files and second.classes == first.classes


def test_auto_size_hits_the_resolved_entry_too(image_folder):
    ref = resolve(str(image_folder))
    auto, _ = load_imageset(ref)  # mixed sizes -> the automatic photo size
    size = auto.shape[1]
    _, hit = load_imageset(ref, size, auto.shape[0])
    assert hit


def test_changed_content_misses(image_folder):
    ref = resolve(str(image_folder))
    load_imageset(ref, 16)
    (image_folder / "red" / "0.png").unlink()
    ds, hit = load_imageset(resolve(str(image_folder)), 16)
    assert not hit and len(ds) == 89


def test_no_temporary_entries_left_behind(image_folder):
    load_imageset(resolve(str(image_folder)), 12)
    assert not [p for p in os.listdir(cache_root()) if p.startswith(".")]
