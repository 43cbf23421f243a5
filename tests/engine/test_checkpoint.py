import pytest
import torch

from cnnfit.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnfit.errors import CnnfitError


def test_round_trip_and_no_temp_file(tmp_path):
    sd = torch.nn.Linear(3, 2).state_dict()
    save_checkpoint({"state_dict": sd, "classes": ["a", "b"]}, tmp_path / "best.pt")
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["classes"] == ["a", "b"] and torch.equal(ckpt["state_dict"]["weight"], sd["weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def boom(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_damaged_or_missing_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CnnfitError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CnnfitError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
