"""A run directory has one writer at a time, and a run name never leads outside project=."""

import subprocess
import sys
from pathlib import Path

from cnnfit.cli import main

QUICK = ["data=digits", "model=simplecnn", "epochs=1", "train.log_every=1000"]
HOLD = """
import sys, time
from pathlib import Path
from cnnfit.pipeline import rundir
with rundir.lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(run: Path) -> subprocess.Popen:
    """Another process that holds the run's lock, as one that trains, resumes or calibrates it does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_being_written_refuses_a_second_writer_and_keeps_its_files(tmp_path, capsys):
    assert main(["train", *QUICK, "epochs=2", "time=0.001", f"project={tmp_path}", "name=busy"]) == 0
    run = tmp_path / "busy"
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.json")}
    holder = _holder(run)
    try:
        codes = [main(["train", f"resume={run}"]), main(["eval", str(run), "calibrate=true"])]
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert codes == [2, 2] and err.count("being written by another cnnfit process") == 2
    assert {name: (run / name).read_bytes() for name in before} == before
    assert main(["train", f"resume={run}"]) == 0  # the holder is gone (killed: the OS dropped its lock)


def test_a_run_name_cannot_climb_out_of_the_project(tmp_path, capsys):
    project = tmp_path / "runs"
    for name in ("../escaped", "a/b", ".."):
        assert main(["train", *QUICK, f"project={project}", f"name={name}"]) == 2
        assert "one folder name inside project=" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not project.exists()
