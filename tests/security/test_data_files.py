"""Data folders, archives, manifests and the cache are data, never code, and never take cnnfit down:
hostile pickles, compression bombs, damaged cache entries, odd names, links and manifests each get a
one-line error or a skipped file with its reason."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cnnfit
from cnnfit.data import cache as cache_module
from cnnfit.data import sources
from cnnfit.data.cache import load_imageset
from cnnfit.data.decode import decode_image
from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import make_folder, write_image

BOMB_BYTES = 256 << 20  # inflated size of each bomb: 4x the 64 MB a member may take, made in ~0.4 s at level 1
RSS_CAP = 64 << 20  # peak memory a bomb may add to the process reading it: under one bomb, far under its 256 MiB
ZEROS = bytes(16 << 20)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache of this test's own."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CNNFIT_CACHE", str(root))
    return root


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and isinstance(exc.value, CnnfitError)
    return text


# --- CIFAR python batches ------------------------------------------------------------------------------

class _Payload:
    """Pickles as a call that creates `marker`: what a hostile batch would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class _Huge:
    """Pickles as bytes(8 GiB): an allowed type asked for a size instead of data."""

    def __reduce__(self):
        return bytes, (8 << 30,)


def _cifar100(folder: Path, train: object, protocol: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    test = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"fine_labels": [0, 1, 0, 1]}
    for name, obj in (("train", train), ("test", test), ("meta", {b"fine_label_names": [b"apple", b"bee"]})):
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return folder


def test_a_hostile_cifar_batch_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    folder = _cifar100(tmp_path / "cifar-100-python", {b"data": _Payload(marker), b"fine_labels": [0]})
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(tmp_path)))
    assert "refusing to load 'builtins.exec'" in _one_line(exc) and str(folder / "train") in str(exc.value)
    assert not marker.exists()
    _cifar100(folder.parent, {b"data": _Huge(), b"fine_labels": [0]})
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(tmp_path)))
    assert "bytes(8589934592): a size, not data" in _one_line(exc)


def test_a_lone_train_file_is_not_taken_for_cifar(tmp_path):
    marker = tmp_path / "ran"
    photos = make_folder(tmp_path / "photos", per_class=3)
    (photos / "train").write_bytes(pickle.dumps(_Payload(marker)))  # the old trigger: any file named train
    (photos / "meta").write_bytes(pickle.dumps(_Payload(marker)))
    ref = resolve(str(photos))
    assert ref.kind == "folder"
    assert len(read(ref, 16)) == 9 and not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])  # 2: bytes as _codecs.encode, as Python 2's CIFAR files; 5: buffers
def test_genuine_cifar_batches_still_load(tmp_path, protocol):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 2],
                 b"filenames": [b"a.png", b"b.png", b"c.png"], b"batch_label": b"batch"}
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog", b"ship"]}, protocol=protocol))
    ds = read(resolve(str(tmp_path)))
    assert ds.images.shape == (18, 3, 32, 32) and ds.classes == ["cat", "dog", "ship"]
    assert np.bincount(ds.origin).tolist() == [15, 0, 3]
    first = pickle.loads((d / "data_batch_1").read_bytes())[b"data"]
    assert np.array_equal(ds.images[0].reshape(-1), first[0])


def test_a_cifar100_folder_loads_and_a_malformed_batch_is_one_line(tmp_path):
    rng = np.random.default_rng(2)
    good = {b"data": rng.integers(0, 255, (6, 3072), dtype=np.uint8), b"fine_labels": [0, 1] * 3}
    ds = read(resolve(str(_cifar100(tmp_path / "good", good))))
    assert len(ds) == 10 and ds.classes == ["apple", "bee"]
    bad = _cifar100(tmp_path / "bad", {b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 1]})
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(bad)))
    assert "3x32x32" in _one_line(exc)


# --- compression bombs -----------------------------------------------------------------------------------

def _peak_growth(tmp_path: Path, code: str) -> dict:
    """Run `code` (it sets `result`) in a fresh interpreter; the peak memory it added over the imports
    (ru_maxrss) and its result."""
    script = ("import json, resource\nfrom cnnfit.data.sources import read, resolve\nfrom cnnfit.errors import "
              "CnnfitError\nbase = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n" + code +
              "\ngrowth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024\n"
              "print(json.dumps({'growth': growth, 'result': result}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "CNNFIT_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _zeros_into(f, nbytes: int) -> None:
    for start in range(0, nbytes, len(ZEROS)):
        f.write(ZEROS[: min(len(ZEROS), nbytes - start)])


def test_a_zip_bomb_member_is_skipped_unread(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in sorted(folder.rglob("*.*")):
            zf.write(p, p.relative_to(folder).as_posix())
        with zf.open("red/bomb.png", "w", force_zip64=True) as f:
            _zeros_into(f, BOMB_BYTES)
        with zf.open("green/dense.png", "w") as f:  # under the member cap, but 100:1 and over 4 MB
            _zeros_into(f, 32 << 20)
    assert archive.stat().st_size < BOMB_BYTES // 100
    got = _peak_growth(tmp_path, f"ds = read(resolve({str(archive)!r}), 16)\n"
                                 "result = [len(ds), [list(s) for s in ds.skipped]]")
    n, skipped = got["result"]
    assert n == 6 and got["growth"] < RSS_CAP, got
    why = dict(skipped)
    assert "over the 64 MB" in why["photos.zip:red/bomb.png"]
    assert "compression bomb" in why["photos.zip:green/dense.png"]


def test_an_npz_bomb_is_refused_before_it_is_inflated(tmp_path):
    from numpy.lib import format as npy

    archive = tmp_path / "bomb.npz"
    count = BOMB_BYTES // (28 * 28)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as f:
            npy.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (count, 28, 28)})
            _zeros_into(f, count * 28 * 28)
        zf.writestr("labels.npy", _npy_bytes(np.zeros(count, np.uint8)[:10]))
    got = _peak_growth(tmp_path, "try:\n"
                                 f"    read(resolve({str(archive)!r}))\n    result = 'read'\n"
                                 "except CnnfitError as exc:\n    result = str(exc)")
    assert got["growth"] < RSS_CAP, got
    assert "compression bomb" in got["result"] and "images.npy" in got["result"], got


def test_an_npz_whose_header_overstates_its_data_is_refused(tmp_path):
    from numpy.lib import format as npy

    archive = tmp_path / "liar.npz"
    with zipfile.ZipFile(archive, "w") as zf:
        with zf.open("images.npy", "w") as f:
            npy.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (10 ** 9, 28, 28)})
            f.write(bytes(784))
        zf.writestr("labels.npy", _npy_bytes(np.zeros(1, np.uint8)))
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(archive)))
    assert "declares" in _one_line(exc)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _idx_gz(path: Path, dims: tuple[int, ...], body: int) -> None:
    import gzip

    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
        _zeros_into(f, body)


def test_a_gzip_idx_bomb_is_refused_and_a_short_one_is_truncated(tmp_path):
    bomb, short = tmp_path / "bomb", tmp_path / "short"
    for folder in (bomb, short):
        folder.mkdir()
        _idx_gz(folder / "train-labels-idx1-ubyte.gz", (10,), 10)
        _idx_gz(folder / "t10k-images-idx3-ubyte.gz", (10, 28, 28), 7840)
        _idx_gz(folder / "t10k-labels-idx1-ubyte.gz", (10,), 10)
    _idx_gz(bomb / "train-images-idx3-ubyte.gz", (BOMB_BYTES // 784, 28, 28), BOMB_BYTES // 784 * 784)
    _idx_gz(short / "train-images-idx3-ubyte.gz", (10, 28, 28), 100)
    got = _peak_growth(tmp_path, "try:\n"
                                 f"    read(resolve({str(bomb)!r}))\n    result = 'read'\n"
                                 "except CnnfitError as exc:\n    result = str(exc)")
    assert got["growth"] < RSS_CAP and "compression bomb" in got["result"], got
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(short)))
    assert "truncated: 100 of the 7840 bytes" in _one_line(exc)


def test_a_corrupt_zip_is_one_line(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(tmp_path / "broken.zip")))
    assert "not a readable zip" in _one_line(exc)


# --- the cache ---------------------------------------------------------------------------------------------

def _entry(root: Path) -> Path:
    [entry] = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return entry


def test_a_truncated_cache_entry_is_decoded_again(cache, image_folder, caplog):
    ref = resolve(str(image_folder))
    expected = np.array(load_imageset(ref, 16)[0].images)  # a copy: the entry's own file is damaged next
    images = _entry(cache) / "images.npy"
    os.truncate(images, images.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, "cnnfit.data.cache"):
        again, hit = load_imageset(ref, 16)
    assert not hit and np.array_equal(np.asarray(again.images), expected)
    assert "damaged" in caplog.text
    third, hit = load_imageset(ref, 16)
    assert hit and np.array_equal(np.asarray(third.images), expected)


def test_a_cache_entry_zeroed_in_place_is_decoded_again(cache, image_folder, caplog):
    ref = resolve(str(image_folder))
    expected = np.array(load_imageset(ref, 16)[0].images)
    images = _entry(cache) / "images.npy"
    offset = np.load(images, mmap_mode="r").offset
    with open(images, "r+b") as f:  # the header stays valid; every pixel becomes black
        f.seek(offset)
        f.write(bytes(images.stat().st_size - offset))
    with caplog.at_level(logging.WARNING, "cnnfit.data.cache"):
        again, hit = load_imageset(ref, 16)
    assert not hit and "checksum" in caplog.text
    assert np.asarray(again.images).any() and np.array_equal(np.asarray(again.images), expected)


def test_a_file_edited_while_decoding_is_not_cached_under_its_new_content(cache, image_folder, monkeypatch):
    victim = image_folder / "red" / "0.png"
    edited = []

    def decode_then_edit(src, *args, **kwargs):
        out = decode_image(src, *args, **kwargs)
        if str(src) == str(victim) and not edited:  # the old pixels are decoded; now the file changes
            write_image(victim, (0, 0, 255), (40, 40), np.random.default_rng(9))
            os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
            edited.append(True)
        return out

    monkeypatch.setattr(sources, "decode_image", decode_then_edit)
    first = np.array(load_imageset(resolve(str(image_folder)), 16, 3)[0].images)  # size and channels given: no alias
    monkeypatch.setattr(sources, "decode_image", decode_image)
    assert edited
    second, hit = load_imageset(resolve(str(image_folder)), 16, 3)
    row = second.files.index(str(victim))
    assert not hit and np.array_equal(second.images[row], decode_image(victim, 16, 3))
    assert not np.array_equal(first[row], second.images[row])


def test_temp_folders_of_killed_decodes_are_removed(cache, image_folder):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = cache_module._HOST
    cache.mkdir()
    left = cache / f".{'a' * 24}.{int(dead.stdout)}.{host}.x1"
    running = cache / f".{'b' * 24}.{os.getpid()}.{host}.x2"  # this very process: still decoding
    for d in (left, running):
        d.mkdir()
        (d / "images.npy").write_bytes(b"half")
    load_imageset(resolve(str(image_folder)), 12)
    assert not left.exists() and running.exists()


def test_a_full_disk_while_caching_is_one_line_and_leaves_nothing(cache, image_folder, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(CnnfitError) as exc:
        load_imageset(resolve(str(image_folder)), 16)
    assert "is full" in _one_line(exc) and "data.cache=false" in str(exc.value)
    assert os.listdir(cache) == []
    monkeypatch.setattr(os, "pwrite", pwrite)
    ds, hit = load_imageset(resolve(str(image_folder)), 16)
    assert not hit and len(ds) == 90


def test_a_full_disk_storing_an_array_source_is_one_line(cache, monkeypatch):
    real_save = np.save

    def save(file, arr, *args, **kwargs):
        if str(file).endswith("labels.npy"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    with pytest.raises(CnnfitError) as exc:
        load_imageset(resolve("digits"))
    assert "is full" in _one_line(exc) and os.listdir(cache) == []


# --- names, links and manifests ------------------------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_skipped_with_its_reason(cache, tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=3)
    good = (folder / "red" / "0.png").read_bytes()
    with open(os.fsencode(folder / "red") + b"/caf\xe9.png", "wb") as f:  # latin-1 bytes: not UTF-8
        f.write(good)
    ds, _ = load_imageset(resolve(str(folder)), 16)
    assert len(ds) == 9
    [(name, why)] = ds.skipped
    assert "not valid UTF-8" in why and name.endswith("caf\ufffd.png")
    name.encode("utf-8")  # printable and writable as it is


def test_a_linked_class_folder_is_read_or_reported_never_empty(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=3)
    (folder / "blue").rename(tmp_path / "blue")
    os.symlink(tmp_path / "blue", folder / "blue")  # a class kept on another disk
    ds = read(resolve(str(folder)), 16)
    assert ds.classes == ["green", "red"]
    [(name, why)] = ds.skipped
    assert name == str(folder / "blue") and "outside the data folder" in why and "allow_outside" in why
    ds = read(resolve(str(folder), allow_outside=True), 16)
    assert ds.classes == ["blue", "green", "red"] and not ds.skipped


def test_links_inside_the_folder_are_followed_and_loops_left_out(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=3)
    (folder / ".pool").mkdir()
    (folder / "blue").rename(folder / ".pool" / "blue")
    os.symlink(folder / ".pool" / "blue", folder / "blue")
    os.symlink(folder, folder / "red" / "again")  # a loop back to the top
    ds = read(resolve(str(folder)), 16)
    assert ds.classes == ["blue", "green", "red"] and len(ds) == 9
    assert [why for _, why in ds.skipped] == ["a link to a folder that contains it: left out"]


def _manifest(folder: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.csv").write_bytes(("path,label\n" + "\n".join(rows) + "\n").encode(encoding))
    return folder / "m.csv"


def test_manifest_rows_outside_its_folder_are_refused_unless_allowed(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "secret.png", (1, 2, 3), (8, 8), rng)
    write_image(tmp_path / "data" / "a.png", (200, 2, 3), (8, 8), rng)
    for row in ("../secret.png", str(tmp_path / "secret.png")):
        csv = _manifest(tmp_path / "data", ["a.png,cat", f"{row},dog"])
        with pytest.raises(CnnfitError) as exc:
            read(resolve(str(csv)), 8)
        assert "line 3" in _one_line(exc) and "data.allow_outside=true" in str(exc.value)
    ds = read(resolve(str(csv), allow_outside=True), 8)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2


def test_a_latin1_manifest_is_one_line_naming_the_fix(tmp_path):
    write_image(tmp_path / "café.png", (9, 9, 9), (8, 8), np.random.default_rng(0))
    csv = _manifest(tmp_path, ["café.png,cat", "café.png,dog"], encoding="latin-1")
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(csv)), 8)
    assert "line 2 is not UTF-8" in _one_line(exc) and "save the manifest as UTF-8" in str(exc.value)
    csv = _manifest(tmp_path, ["café.png,cat", "café.png,dog"])  # the same rows in UTF-8 read
    assert len(read(resolve(str(csv)), 8)) == 2


def test_allow_outside_is_a_data_setting():
    assert cnnfit.load_config(["data.allow_outside=true"]).data.allow_outside is True
    assert cnnfit.load_config([]).data.allow_outside is False
