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


def test_a_write_killed_midway_leaves_the_previous_checkpoint_loadable(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.pt")
    writer = ("import torch, sys; from cnnfit.engine.checkpoint import save_checkpoint; "
              "save_checkpoint({'step': 2, 'w': torch.ones(400_000_000, dtype=torch.uint8)}, sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "last.pt")])

    def written() -> int:  # bytes in the writer's temporary file, whose name is its own (.last.pt.<random>.tmp)
        try:
            return sum(t.stat().st_size for t in tmp_path.glob(".last.pt.*.tmp"))
        except FileNotFoundError:  # renamed between the listing and the stat
            return 0

    while written() <= 1_000_000 and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the writer finished before it could be killed mid-write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1  # the rename never happened


def test_a_full_disk_leaves_the_previous_checkpoint_loadable(tmp_path):
    import subprocess

    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a 1 MB tmpfs needs root; the simulated full disk in test_resume.py still runs")
    try:
        save_checkpoint({"step": 1, "w": torch.ones(100_000)}, disk / "last.pt")  # 400 KB
        with pytest.raises(OSError, match="No space left"):
            save_checkpoint({"step": 2, "w": torch.ones(200_000)}, disk / "last.pt")  # 800 KB: does not fit beside it
        assert load_checkpoint(disk / "last.pt")["step"] == 1
        assert [p.name for p in disk.iterdir()] == ["last.pt"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
