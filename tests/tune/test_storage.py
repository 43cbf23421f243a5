"""A study's storage: processes that claim waiting trials from one SQLite file side by side never get the same one,
and URLs open or fail with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnnfit.errors import CnnfitError
from cnnfit.tune.storage import claim, local_url, open_storage

# Each claimer waits for the others, then claims as fast as it can, printing every trial id it got.
CLAIMER = """
import sys, time
from pathlib import Path
import optuna
from cnnfit.tune.storage import claim, open_storage

url, ready, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="race", storage=open_storage(url))
(ready / sys.argv[4]).touch()
deadline = time.monotonic() + 60
while len(list(ready.iterdir())) < n and time.monotonic() < deadline:
    time.sleep(0.01)
while (trial_id := claim(study, url)) is not None:
    print(trial_id, flush=True)
"""


def test_claimers_on_one_sqlite_file_never_share_a_trial(tmp_path):
    import optuna

    url, waiting, procs = local_url(tmp_path), 60, 4
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for x in range(waiting):
        study.enqueue_trial({"x": x})
    ready = tmp_path / "ready"
    ready.mkdir()
    runs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(ready), str(procs), str(k)],
                             stdout=subprocess.PIPE, text=True) for k in range(procs)]
    got = [int(line) for p in runs for line in p.communicate(timeout=300)[0].split()]
    assert all(p.returncode == 0 for p in runs)
    assert sorted(got) == sorted(t._trial_id for t in study.get_trials(deepcopy=False))  # each once, none twice
    assert claim(study, url) is None


def test_unreadable_url_is_one_line():
    with pytest.raises(CnnfitError, match="is not a database URL") as err:
        open_storage("not a url")
    assert "\n" not in str(err.value)
