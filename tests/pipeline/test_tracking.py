"""track=mlflow and track=wandb end to end on a slice of the digits set, read back with each tracker's own client:
MLflow's default SQLite store in the project folder, a file store, a local `mlflow server` (and one killed
mid-run), a tuning study's nested runs, and wandb offline."""

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings(  # SQLAlchemy 2.1 warns about MLflow 3.17 SQL store's loaders
    "ignore::DeprecationWarning:mlflow.store.tracking.sqlalchemy_store")
pytest.importorskip("mlflow", reason="track=mlflow needs mlflow (pip install 'cnnfit[track]')")
pytest.importorskip("wandb", reason="track=wandb needs wandb (pip install 'cnnfit[track]')")

from mlflow.tracking import MlflowClient  # noqa: E402

import cnnfit  # noqa: E402
from cnnfit.config import load_config  # noqa: E402
from cnnfit.engine.callbacks import Callback  # noqa: E402
from cnnfit.engine.callbacks.mlflow_run import PARAM_LENGTH, flat_params  # noqa: E402
from cnnfit.engine.callbacks.wandb_run import has_api_key  # noqa: E402
from cnnfit.errors import CnnfitError  # noqa: E402
from cnnfit.tune import tune  # noqa: E402

# 2 epochs of a quarter-width simplecnn on 30% of digits: ~380 training images, a few seconds a run
QUICK = dict(data="digits", epochs=2, model="simplecnn", model__width=0.25, data__fraction=0.3,
             train__log_every=1000, eval__report=False)
SERVER_START = 180  # seconds for `mlflow server` to answer /health (imports, SQLite schema: 13-30 s on 2 busy cores)


@pytest.fixture(autouse=True)
def _no_user_trackers(tmp_path, monkeypatch):
    """No tracker settings of the machine's user: no server, no key, wandb's own folders in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "WANDB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no wandb login in the user's ~/.netrc
    for name in ("CONFIG", "CACHE", "DATA"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / f"wandb-{name.lower()}"))


def _run_of(run_dir: Path, tracker: str) -> str:
    return json.loads((run_dir / "tracking.json").read_text())[tracker]["run_id"]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def _check_mlflow_run(client: MlflowClient, run: cnnfit.Run, epochs: int) -> str:
    """The run's params, its per-epoch curves and its final scores, as the tracking store holds them."""
    run_id = _run_of(run.dir, "mlflow")
    got = client.get_run(run_id)
    assert got.info.run_name == run.dir.name and got.info.status == "FINISHED"
    assert got.data.tags["cnnfit.run_dir"] == str(run.dir.resolve())
    params = got.data.params
    assert params["model.name"] == "simplecnn" and params["train.epochs"] == str(epochs)
    assert params["train.track"] == '["mlflow"]' and params["data.source"] == "digits"
    for name in ("val_loss", "val_acc", "train_loss"):
        points = client.get_metric_history(run_id, name)
        assert sorted(p.step for p in points) == list(range(1, epochs + 1))
        assert sorted(points, key=lambda p: p.step)[-1].value == pytest.approx(run.history[-1][name])
    assert got.data.metrics["test_accuracy"] == pytest.approx(run.accuracy)
    return run_id


def test_mlflow_default_store_holds_params_curves_scores_and_files(tmp_path):
    run = cnnfit.train(**{**QUICK, "eval__report": True}, track="mlflow", project=str(tmp_path / "runs"))
    store = tmp_path / "runs" / "mlruns"
    assert (store / "mlflow.db").is_file()  # in the project folder, not the working directory
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert client.get_experiment_by_name("runs") is not None  # the project folder's name
    run_id = _check_mlflow_run(client, run, epochs=2)
    assert {"config.yaml", "metrics.json", "history.csv", "report.html", "plots"} <= _artifacts(client, run_id)
    assert "plots/curves.png" in _artifacts(client, run_id, "plots")
    assert "best.pt" not in _artifacts(client, run_id)  # the run directory keeps the checkpoints
    assert (store / "artifacts").is_dir()


class Boom(Callback):
    def on_fit_start(self, state) -> None:
        raise RuntimeError("boom")


def test_a_run_that_raises_ends_its_tracker_runs_as_failed(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.17 refuses its file store without it
    with pytest.raises(RuntimeError, match="boom"):  # the trackers start before it (they come first)
        cnnfit.train(**QUICK, track="mlflow,wandb", project=str(tmp_path / "runs"), callbacks=[Boom()])
    run_dir = tmp_path / "runs" / "train"
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    assert client.get_run(_run_of(run_dir, "mlflow")).info.status == "FAILED"
    wandb.teardown()
    assert [e.exit_code for e in _of(_wandb_records(run_dir), "exit")] == [1]


def test_missing_client_is_one_line_before_any_folder(tmp_path, monkeypatch):
    for name in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
        with pytest.raises(CnnfitError, match=r"pip install 'cnnfit\[track\]'") as err:
            cnnfit.train(**QUICK, track=name, project=str(tmp_path / "runs"))
        assert name in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "runs").exists()


def test_track_key_takes_none_one_or_a_list():
    assert load_config(["track=mlflow,wandb"]).train.track == ["mlflow", "wandb"]
    assert load_config(["track=[wandb]"]).train.track == ["wandb"]
    assert load_config(["track=none"]).train.track == load_config([]).train.track == []
    with pytest.raises(CnnfitError, match="train.track"):
        load_config(["track=mlfow"])


def test_long_params_are_cut_to_mlflow_limit_saying_why():
    flat = flat_params({"data": {"exclude": ["x" * 9000], "fraction": 0.5}, "model": {"init": None}})
    assert flat["data.fraction"] == "0.5" and flat["model.init"] == "null"
    cut = flat["data.exclude"]
    assert len(cut) == PARAM_LENGTH and "cut from 9004 characters" in cut and cut.startswith('["xxx')


def test_wandb_key_lookup(tmp_path, monkeypatch):
    assert not has_api_key()  # no key, no netrc entry: runs go offline
    (tmp_path / "netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    (tmp_path / "netrc").chmod(0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert has_api_key()
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert has_api_key()


# --- a local `mlflow server` ------------------------------------------------------------------------------------


class MlflowServer:
    """`mlflow server` on loopback with a SQLite store and proxied artifacts in a temporary folder; started on first
    use, and again after a test has killed it."""

    def __init__(self, root: Path) -> None:
        self.root, self.proc, self.url = root, None, ""
        self.command = Path(sys.executable).parent / "mlflow"

    def start(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return self.url
        if not self.command.is_file():
            pytest.skip(f"no mlflow command beside {sys.executable} (pip install 'cnnfit[track]' installs it)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner processes
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.command), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=log, env=env, start_new_session=True)  # its own group: kill() ends its workers too
        deadline = time.monotonic() + SERVER_START
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.3)
        self.kill()
        pytest.fail(f"mlflow server did not answer /health: {(self.root / 'server.log').read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield srv
    srv.kill()


def test_mlflow_server_holds_the_run(server, tmp_path, monkeypatch):
    url = server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    run = cnnfit.train(**QUICK, track="mlflow", project=str(tmp_path / "runs"))
    client = MlflowClient(url)
    run_id = _check_mlflow_run(client, run, epochs=2)
    assert {"config.yaml", "metrics.json", "history.csv"} <= _artifacts(client, run_id)  # through the server
    assert json.loads((run.dir / "tracking.json").read_text())["mlflow"]["tracking_uri"] == url


class KillServer(Callback):
    """Kill the tracking server at the end of the first epoch."""

    def __init__(self, server: MlflowServer) -> None:
        self.server = server

    def on_epoch_end(self, state) -> None:
        if state.epoch == 0:
            self.server.kill()


def test_a_server_killed_mid_run_warns_once_and_the_run_finishes(server, tmp_path, monkeypatch, caplog):
    url = server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    caplog.set_level(logging.WARNING, logger="cnnfit")
    run = cnnfit.train(**{**QUICK, "epochs": 3, "eval__report": True}, track="mlflow",
                       project=str(tmp_path / "runs"), callbacks=[KillServer(server)])
    assert len(run.history) == 3 and run.accuracy > 0
    assert {"metrics.json", "best.pt", "last.pt", "report.html", "tracking.json"} <= {p.name for p in run.dir.iterdir()}
    warned = [r for r in caplog.records if r.name.startswith("cnnfit") and r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "tracking stopped, training goes on" in warned[0].getMessage()
    assert "\n" not in warned[0].getMessage()
    # the server's own store, read directly: the run and its first epoch, logged before the server died
    client = MlflowClient(f"sqlite:///{server.root / 'mlflow.db'}")
    run_id = _run_of(run.dir, "mlflow")
    assert client.get_run(run_id).data.params["train.epochs"] == "3"
    assert [p.step for p in client.get_metric_history(run_id, "val_loss")] == [1]


# --- a tuning study ------------------------------------------------------------------------------------------------


def test_tune_nests_trials_under_the_study_run_in_a_file_store_and_groups_them_on_wandb(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.17 refuses its file store without it
    cfg = load_config(["data=digits", "epochs=1", "model=simplecnn", "model.width=0.25", "data.fraction=0.3",
                       "train.log_every=1000", "space.lr=choice([0.001, 0.003])", "tune.sampler=grid", "pruner=none",
                       "refit=false", "track=mlflow,wandb", f"project={tmp_path / 'search'}"])
    result = tune(cfg)
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("search")
    runs = client.search_runs([experiment.experiment_id])
    study = next(r for r in runs if r.info.run_id == _run_of(result.dir, "mlflow"))
    assert study.info.run_name == result.dir.name and study.info.status == "FINISHED"
    assert study.data.metrics["trials_complete"] == 2 and "best_value" in study.data.metrics
    assert {"tune.json", "trials.csv", "best.yaml"} <= _artifacts(client, study.info.run_id)
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert sorted(r.info.run_name for r in trials) == ["trial000", "trial001"]
    assert {r.data.params["optim.lr"] for r in trials} == {"0.001", "0.003"}
    assert all(r.info.status == "FINISHED" and "val_value" in r.data.metrics for r in trials)
    wandb.teardown()
    for trial in ("trial000", "trial001"):  # wandb has no nesting: the study's name groups its trials
        (start,) = _of(_wandb_records(result.dir / "trials" / trial), "run")
        assert (start.display_name, start.run_group, start.job_type) == (trial, result.study, "trial")


# --- wandb, offline --------------------------------------------------------------------------------------------------


def _wandb_records(run_dir: Path) -> list:
    """The records of the run's .wandb transaction log, as wandb's protobuf Record messages. The framing is LevelDB's
    log format (wandb's own datastore): a 7-byte file header, 32 KiB blocks, each record in fragments of a 7-byte
    header (crc32, length, type: 1 whole, 2 first, 3 middle, 4 last) and the data."""
    from wandb.proto.wandb_internal_pb2 import Record

    (log_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block, pos, records, parts = log_file.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a header: the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        parts, pos = parts + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            records.append(Record.FromString(parts))
            parts = b""
    return records


def _of(records: list, kind: str) -> list:
    """The payloads of the records of one kind (run, history, summary, exit, ...), in order."""
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def _items(items) -> dict:
    """A record's key/value items as a dict; a key comes as `key` or as the parts of `nested_key`."""
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_wandb_offline_run_holds_config_curves_summary_and_files(tmp_path):
    import wandb

    run = cnnfit.train(**QUICK, track="wandb", project=str(tmp_path / "runs"))
    wandb.teardown()  # the run's service writes the log's last records as it closes, a moment after finish()
    ids = json.loads((run.dir / "tracking.json").read_text())["wandb"]
    assert ids["mode"] == "offline" and Path(ids["dir"]).is_relative_to(run.dir.resolve())
    records = _wandb_records(run.dir)
    (start,) = _of(records, "run")
    assert (start.run_id, start.display_name, start.project) == (ids["run_id"], run.dir.name, "runs")
    config = _items(start.config.update)
    assert config["model"]["name"] == "simplecnn" and config["train"]["epochs"] == 2
    rows = [_items(h.item) for h in _of(records, "history")]
    assert [row["_step"] for row in rows] == [1, 2]
    assert [row["val_loss"] for row in rows] == pytest.approx([h["val_loss"] for h in run.history])
    summary = {k: v for update in _of(records, "summary") for k, v in _items(update.update).items()}
    assert summary["test_accuracy"] == pytest.approx(run.accuracy)
    assert [e.exit_code for e in _of(records, "exit")] == [0]
    files = Path(ids["dir"]) / "files" / run.dir.name
    assert {"config.yaml", "metrics.json", "history.csv"} <= {p.name for p in files.iterdir()}
