"""files.py: writes that a reader never sees half-done, and names that never overwrite a run."""

import csv

import pytest

from cnnfit.files import atomic_path, free_name, new_run_dir, write_atomic, write_csv


def test_write_csv_reloads_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["file", "prob"], [["a, b.png", 0.5], ["c.png", 1]])
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["file", "prob"], ["a, b.png", "0.5"], ["c.png", "1"]]
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text().startswith("file,prob") and [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_names_are_never_reused(tmp_path):
    write_atomic(tmp_path / "predict.csv", b"x")
    assert free_name(tmp_path / "predict.csv").name == "predict2.csv"
    assert [new_run_dir(tmp_path, "train").name for _ in range(3)] == ["train", "train2", "train3"]
