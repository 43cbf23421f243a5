"""Near-duplicate search: a 64-bit dHash of each image finds the pairs within a few bits of each other, and
16x16 grey thumbnails with the channel means confirm them."""

from __future__ import annotations

import numpy as np

from cnnfit.data.loader import read_rows

NEAR_THRESHOLD = 6  # bits of the 64-bit dHash that may differ; JPEG q75 copies differ by 0-3 (CIFAR, photos)
MIN_NEAR_SIDE = 16  # px: below this a 9x8 dHash and 16x16 thumbnail cannot tell images apart
_DHASH_MARGIN = 2.0  # grey levels a neighbour must be brighter by to set a bit: without it codec noise on flat
#                      backgrounds flips up to 19 of 64 bits (MNIST, JPEG q75); with it at most 7
MIN_SIMILARITY = 0.9  # correlation of 16x16 grey thumbnails that confirms a hash match: JPEG q75 copies score
#                       >= 0.99; distinct CIFAR photos whose hashes collide (flat, dark, blurry) mostly < 0.8
MAX_COLOUR_SHIFT = 40.0  # grey levels the mean of a channel may move: a copy keeps its colours, while two
#                          near-flat images (green and red backdrops, one small shape each) correlated at 0.91
MAX_EXAMINED = 200_000_000  # candidate pairs the near search may look at (~3 s); the 60k CIFAR photos need 25M
MAX_FOUND = 1_000_000  # hash matches it may collect before confirming them; CIFAR has 4k


def _area(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix that resizes by area averaging: each output averages the inputs it covers."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    j = np.arange(n_in)[None]
    w = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j), 0, None)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def signatures(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit dHash (N,), unit-norm centred 16x16 grey thumbnails (N, 256), zero for flat images, and the
    mean of each channel (N, C)."""
    n, c, h, w = images.shape
    ay8, ax9, ay16, ax16 = _area(h, 8), _area(w, 9), _area(h, 16), _area(w, 16)
    luma = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's convert("L")
    hashes, thumbs, means = np.empty(n, np.uint64), np.empty((n, 256), np.float32), np.empty((n, c), np.float32)
    step = max(1, (1 << 24) // (c * h * w))  # ~64 MB of float32 at a time, whatever the image size
    for s in range(0, n, step):
        x = read_rows(images, np.arange(s, min(s + step, n))).astype(np.float32)  # (B, C, H, W), pread: no mapped pages
        g = x[:, 0] if c == 1 else np.tensordot(x, luma, axes=([1], [0]))  # (B, H, W)
        small = ay8 @ g @ ax9.T  # (B, 8, 9)
        bits = (small[:, :, 1:] - small[:, :, :-1] > _DHASH_MARGIN).reshape(len(x), 64)
        hashes[s: s + len(x)] = np.packbits(bits, axis=1).view(">u8")[:, 0]
        t = (ay16 @ g @ ax16.T).reshape(len(x), 256)
        t -= t.mean(1, keepdims=True)
        norm = np.linalg.norm(t, axis=1, keepdims=True)
        thumbs[s: s + len(x)] = np.where(norm > 16.0, t / np.maximum(norm, 1e-6), 0)  # flat: std under 1 level
        means[s: s + len(x)] = x.mean((2, 3))
    return hashes, thumbs, means


def similarity(thumbs: np.ndarray, means: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Thumbnail correlation; 0 where a channel's mean moved over MAX_COLOUR_SHIFT; two flat images compare by
    colour alone, a flat and a textured one score 0."""
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), 1 << 16):
        a, b = i[s: s + (1 << 16)], j[s: s + (1 << 16)]
        corr = np.einsum("pd,pd->p", thumbs[a], thumbs[b])
        shift = np.abs(means[a] - means[b]).max(1)  # (P,) largest channel difference
        flat = ~thumbs[a].any(1) & ~thumbs[b].any(1)
        out[s: s + len(a)] = np.where(shift > MAX_COLOUR_SHIFT, 0, np.where(flat, 1 - shift / 255, corr))
    return out


def hamming_pairs(h: np.ndarray, t: int, budget: int = MAX_EXAMINED) -> tuple[np.ndarray, np.ndarray, bool]:
    """All pairs i < j with popcount(h[i] ^ h[j]) <= t, and whether the search finished within `budget`.

    Multi-index hashing: of four 16-bit chunks, two hashes within t bits differ in at most t // 4 bits of one
    (pigeonhole), so looking each row up in every chunk's bucket table under every flip of <= t // 4 bits finds
    every pair. About 68 lookups of N for t = 4..7 on varied hashes; brute force on 70k is 2.4e9 XORs (~12 s).
    """
    n, rows = len(h), np.arange(len(h))
    flips = np.flatnonzero(np.bitwise_count(np.arange(1 << 16, dtype=np.uint16)) <= t // 4)  # 17 for t = 4..7
    found, examined = [], 0
    for c in range(4):
        keys = ((h >> np.uint64(16 * c)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(keys, kind="stable")  # rows grouped by chunk value
        size = np.bincount(keys, minlength=1 << 16)  # (65536,) rows per chunk value
        first = np.cumsum(size) - size  # where each value's rows start in `order`
        for f in flips:
            lo, cnt = first[keys ^ f], size[keys ^ f]  # (N,) each row's candidates: order[lo : lo + cnt]
            examined += int(cnt.sum())
            if examined > budget or sum(map(len, found)) > MAX_FOUND:  # hashes too alike (digits on black):
                return np.zeros(0, np.int64), np.zeros(0, np.int64), False  # say so rather than run for minutes
            ends, start = np.cumsum(cnt), 0
            while start < n:  # rows in slices of ~4M candidates, to bound memory
                before = ends[start - 1] if start else 0
                stop = max(start + 1, int(np.searchsorted(ends, before + (1 << 22), "right")))
                k = cnt[start:stop]
                i = np.repeat(rows[start:stop], k)
                j = order[np.repeat(lo[start:stop] - (np.cumsum(k) - k), k) + np.arange(len(i))]
                keep = (i < j) & (np.bitwise_count(h[i] ^ h[j]) <= t)
                found.append(i[keep] * n + j[keep])
                start = stop
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return pairs // n, pairs % n, True


__all__ = ["MAX_COLOUR_SHIFT", "MAX_EXAMINED", "MAX_FOUND", "MIN_NEAR_SIDE", "MIN_SIMILARITY", "NEAR_THRESHOLD",
           "hamming_pairs", "signatures", "similarity"]
