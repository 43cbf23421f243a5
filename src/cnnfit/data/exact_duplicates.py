"""Exact duplicates: images whose keys are equal, the key being the file's sha256 when there is a file and the
sha256 of the decoded pixels otherwise."""

from __future__ import annotations

import hashlib

import numpy as np


def pixel_keys(images: np.ndarray, keys: list[str | None]) -> list[str]:
    """Each image's key: its file's (given), else the sha256 of its decoded pixels."""
    flat = images.reshape(len(images), -1)  # (N, C*H*W) rows: a view, also of a memmap
    return [k or "pixels:" + hashlib.sha256(flat[i].tobytes()).hexdigest() for i, k in enumerate(keys)]


def same_keys(keys: list[str]) -> list[list[int]]:
    """The groups of two or more images with equal keys, each in index order, by their first member."""
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    return [g for g in by_key.values() if len(g) > 1]
