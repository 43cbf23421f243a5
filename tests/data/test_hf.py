"""Hugging Face datasets: save_to_disk folders, the Hub's parquet layouts, and fetching hf:owner/name (from a
local server: no test touches the network)."""

import hashlib
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from cnnfit.data.hf import is_hf_dir
from cnnfit.data.hf_hub import hub_folder
from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.local_server import LocalServer

datasets = pytest.importorskip("datasets")

NAMES = ["zebra", "ant", "moth"]  # ClassLabel order, not sorted: cnnfit's classes come out sorted


def _glyph(label: int) -> np.ndarray:
    """An upright 16 px glyph: a bright bar along the top, and label + 1 dots down the left edge."""
    img = np.zeros((16, 16), np.uint8)
    img[0:2, 2:14] = 255  # read on its side, the bar would run down a side
    img[4: 4 + 3 * (label + 1): 3, 1] = 200
    return img


def _png(label: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_glyph(label)).save(buf, "PNG")
    return buf.getvalue()


def _dataset(n: int, labels=None, features=None) -> "datasets.Dataset":
    features = features or datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    values = labels if labels is not None else [i % 3 for i in range(n)]
    images = [{"bytes": _png(i % 3), "path": None} for i in range(n)]
    return datasets.Dataset.from_dict({"image": images, "label": values}, features=features)


def _hub_parquet(folder, splits, string_labels=False):
    features = None
    if string_labels:
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    for split, n in splits.items():
        labels = [NAMES[i % 3] for i in range(n)] if string_labels else None
        _dataset(n, labels, features).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_save_to_disk_dataset_dict_reads_upright_with_class_names_and_trains(tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": _dataset(36), "test": _dataset(12)}).save_to_disk(str(folder))
    assert is_hf_dir(folder)
    ds = read(resolve(str(folder)))
    assert ds.classes == sorted(NAMES) and not ds.skipped
    assert np.bincount(ds.origin).tolist() == [36, 0, 12]
    assert ds.images.shape == (48, 1, 16, 16)
    assert (ds.images[0, 0] == _glyph(0)).all()  # upright: the bar along the top
    assert [ds.classes[v] for v in ds.labels[:3]] == NAMES  # labels follow the ClassLabel names
    assert (ds.images[1, 0] == _glyph(1)).all() and ds.files[1].endswith("saved/train[1]")
    import cnnfit

    run = cnnfit.train(data=str(folder), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == sorted(NAMES) and run.metrics["split"] == "test"


def test_a_single_saved_dataset_has_no_split(tmp_path):
    _dataset(9).save_to_disk(str(tmp_path / "one"))
    ds = read(resolve(str(tmp_path / "one")))
    assert ds.origin is None and len(ds) == 9 and ds.classes == sorted(NAMES)


def test_hub_parquet_layout_with_string_labels_and_other_splits_left_out(tmp_path, caplog):
    folder = _hub_parquet(tmp_path / "repo", {"train": 36, "validation": 12, "unsupervised": 5}, string_labels=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    assert is_hf_dir(folder) and is_hf_dir(folder / "data" / "train-00000-of-00001.parquet")
    with caplog.at_level(logging.WARNING, logger="cnnfit.data.hf"):
        ds = read(resolve(str(folder)))
    assert ds.classes == sorted(NAMES)
    assert np.bincount(ds.origin).tolist() == [36, 12]  # validation is split 1; unsupervised left out
    assert "unsupervised" in caplog.text
    assert (ds.images[0, 0] == _glyph(0)).all() and ds.classes[ds.labels[0]] == NAMES[0]
    one = read(resolve(str(folder / "data" / "validation-00000-of-00001.parquet")))
    assert one.origin is None and len(one) == 12  # one file is the whole dataset


def test_parquet_split_folders_with_class_label_metadata(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        _dataset(n).to_parquet(str(tmp_path / "conv" / "default" / split / "0000.parquet"))
    ds = read(resolve(str(tmp_path / "conv")))
    assert ds.classes == sorted(NAMES) and np.bincount(ds.origin).tolist() == [6, 0, 3]
    _dataset(3).to_parquet(str(tmp_path / "conv" / "other" / "train" / "0000.parquet"))
    with pytest.raises(CnnfitError, match="several Hugging Face configurations") as err:
        read(resolve(str(tmp_path / "conv")))
    assert "\n" not in str(err.value)


def test_images_stored_by_path_are_read_inside_the_folder_only(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "bypath"
    (folder / "imgs").mkdir(parents=True)
    for i in range(3):
        (folder / "imgs" / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "outside.png").write_bytes(_png(0))
    images = [{"bytes": None, "path": f"imgs/{i}.png"} for i in range(3)] + [{"bytes": None, "path": "../outside.png"}]
    table = pa.table({"img": images, "target": ["a", "b", "c", "a"]})
    pq.write_table(table, folder / "train.parquet")
    ds = read(resolve(str(folder)))
    assert len(ds) == 3 and ds.classes == ["a", "b", "c"] and (ds.images[2, 0] == _glyph(2)).all()
    assert len(ds.skipped) == 1 and "outside the dataset folder" in ds.skipped[0][1]
    assert len(read(resolve(str(folder), allow_outside=True))) == 4


def _serve_repo(srv, repo, files, revision="main", oid=None):
    listing = [{"type": "directory", "path": "data"}, {"type": "file", "path": "README.md", "size": 10}]
    for path, body in files.items():
        sha = oid or hashlib.sha256(body).hexdigest()
        listing.append({"type": "file", "path": path, "size": len(body), "lfs": {"oid": sha, "size": len(body)}})
        srv.serve(f"datasets/{repo}/resolve/{revision}/{path}", body)
    srv.serve(f"api/datasets/{repo}/tree/{revision}?recursive=true", json.dumps(listing).encode())


def test_hub_download_checked_and_read(tmp_path, monkeypatch):
    src = _hub_parquet(tmp_path / "src", {"train": 12, "test": 6})
    files = {f"data/{f.name}": f.read_bytes() for f in sorted((src / "data").iterdir())}
    root = tmp_path / "root"
    monkeypatch.setenv("CNNFIT_DATA", str(root))
    srv = LocalServer()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    try:
        _serve_repo(srv, "owner/name", files)
        with pytest.raises(CnnfitError, match="data.download=true"):
            resolve("hf:owner/name")
        ref = resolve("hf:owner/name", download=True)
        assert ref.path == root / "hf" / "owner" / "name" and ref.path.is_dir()
        assert not (root / "hf" / "owner" / "name.partial").exists()
        ds = read(ref)
        assert ds.classes == sorted(NAMES) and np.bincount(ds.origin).tolist() == [12, 0, 6]
        # no parquet in main: the Hub's parquet conversion is fetched instead
        srv.serve("api/datasets/owner/conv/tree/main?recursive=true", b'[{"type": "file", "path": "x.py"}]')
        _serve_repo(srv, "owner/conv", {"default/train/0000.parquet": files["data/train-00000-of-00001.parquet"]},
                    revision="refs%2Fconvert%2Fparquet")
        assert len(read(resolve("hf:owner/conv", download=True))) == 12
        # a listed sha256 the bytes do not match: refused, and nothing left that could pass for the dataset
        _serve_repo(srv, "owner/bad", files, oid="0" * 64)
        with pytest.raises(CnnfitError, match="corrupt") as err:
            resolve("hf:owner/bad", download=True)
        assert "\n" not in str(err.value)
        assert not (root / "hf" / "owner" / "bad").exists() and not (root / "hf" / "owner" / "bad.partial").exists()
        # a file without an LFS sha256 cannot be checked: refused before any download
        srv.serve("api/datasets/owner/nolfs/tree/main?recursive=true",
                  b'[{"type": "file", "path": "data/train-00000-of-00001.parquet", "size": 5}]')
        with pytest.raises(CnnfitError, match="no sha256"):
            resolve("hf:owner/nolfs", download=True)
        for repo, why in (("owner/missing", "404"), ("owner/junk", "not valid JSON")):
            if repo == "owner/junk":
                srv.serve("api/datasets/owner/junk/tree/main?recursive=true", b"<html>")
            with pytest.raises(CnnfitError, match=f"cannot list hf:{repo} .*{why}") as err:
                resolve(f"hf:{repo}", download=True)
            assert "\n" not in str(err.value)
    finally:
        srv.stop()


def test_truncated_arrow_and_parquet_files_fail_in_one_line(tmp_path):
    _dataset(30).save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    parquet = tmp_path / "p" / "train.parquet"
    _dataset(30).to_parquet(str(parquet))
    parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])
    for path in (tmp_path / "saved", parquet, tmp_path / "p"):
        with pytest.raises(CnnfitError, match="not a readable Hugging Face dataset") as err:
            read(resolve(str(path)))
        assert "\n" not in str(err.value)


def test_bad_records_are_skipped_by_name_and_the_rest_read(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    images = [{"bytes": _png(i % 3), "path": None} for i in range(9)]
    images[4] = {"bytes": b"not a png", "path": None}
    images[5] = None
    labels = [i % 3 for i in range(9)]
    labels[6] = None
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "d"))
    ds = read(resolve(str(tmp_path / "d")))
    assert len(ds) == 6
    assert [name for name, _ in ds.skipped] == ["d/train[4]", "d/train[5]", "d/train[6]"]
    assert "no label" in dict(ds.skipped)["d/train[6]"]


def test_a_dataset_without_an_image_or_label_column_says_what_it_has(tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(CnnfitError, match="columns text, label; cnnfit needs an image column") as err:
        read(resolve(str(tmp_path / "text")))
    assert "\n" not in str(err.value)


def test_hub_names_are_checked(tmp_path):
    assert hub_folder(tmp_path, "ylecun/mnist") == tmp_path / "hf" / "ylecun" / "mnist"
    for bad in ("../x", "owner", "a/b/c", "owner/..", "owner/.x", "/abs"):
        with pytest.raises(CnnfitError, match="e.g. hf:ylecun/mnist") as err:
            hub_folder(tmp_path, bad)
        assert "\n" not in str(err.value)


def test_is_hf_dir_is_false_for_other_folders(tmp_path, image_folder):
    assert not is_hf_dir(image_folder) and not is_hf_dir(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    assert not is_hf_dir(tmp_path / "notes.txt")


def test_the_data_report_reopens_records_and_finds_a_duplicate_row(tmp_path):
    from cnnfit.data.inspect import inspect_dataset

    folder = tmp_path / "saved"
    rows = _dataset(12)
    datasets.concatenate_datasets([rows, rows.select([4])]).save_to_disk(str(folder))  # row 4 once more
    ds = read(resolve(str(folder)))
    report = inspect_dataset(ds, {"train": np.arange(len(ds))}, source=folder)
    assert report["files"]["read"] == 13  # every record reopened through the table, none "moved since caching"
    groups = [set(f["files"]) for f in report["findings"] if f["kind"] == "exact_duplicate"]
    assert any({"saved[4]", "saved[12]"} <= g for g in groups) and len(groups) == 3  # a glyph per class
