"""Track a run on MLflow: the resolved config as params, every epoch's metrics, the final scores and the run's key
files as artifacts. Through MlflowClient, never the fluent `mlflow.start_run`: no process-wide active run, so the
user's own mlflow code, and a tuning study's parent run in the same process, are left alone."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cnnfit.engine.callbacks.tracking import Parent, Status, Tracker, finite, guarded, numeric, record_id
from cnnfit.engine.state import State

log = logging.getLogger(__name__)

# without MLFLOW_TRACKING_URI: <project>/mlruns/mlflow.db (SQLite) and the artifacts in <project>/mlruns/artifacts,
# beside the run directories they track (MLflow's own defaults, ./mlflow.db and ./mlruns, follow the working
# directory). SQLite rather than MLflow's plain file store, which is in maintenance mode: MLflow 3.17 refuses it
# unless MLFLOW_ALLOW_FILE_STORE=true. View: mlflow ui --backend-store-uri sqlite:///runs/mlruns/mlflow.db
STORE = "mlruns"
# MLflow's own defaults, 7 retries with backoff factor 2 and a 120 s timeout, hold one call to a dead server for
# minutes; with these a call gives up within 5 s, and after it the tracker is off. No retry: urllib3 makes the first
# one at once, which rarely outlasts an outage, and logs a warning of its own for it
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call (mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH)
PARAM_LENGTH = 6000  # MLflow's limit on a param value's length (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)


class MLflowRun(Tracker):
    """One MLflow run per cnnfit run, named as its run directory, whose tracking.json records the MLflow run id.

    `params`: the resolved config as a nested dict, logged flat (`optim.lr=0.001`). `uri`: the tracking store; None:
    the parent's, else MLFLOW_TRACKING_URI, else SQLite in `<project>/mlruns` (STORE). `experiment`: None:
    MLFLOW_EXPERIMENT_NAME, else the project folder's name. `parent`: the tuning study a trial nests under.
    The pipeline calls `finish` with the final scores, or `end` when the run fails.
    """

    label = "mlflow"
    env = HTTP_LIMITS  # set (where the user has not) while the tracker calls the client

    def __init__(self, run_dir: Path, *, params: dict[str, Any], uri: str | None = None,
                 experiment: str | None = None, parent: Parent | None = None) -> None:
        super().__init__(run_dir, params=params, parent=parent)
        self.uri = uri or (parent.mlflow_uri if parent else None) or os.environ.get("MLFLOW_TRACKING_URI")
        self.store = None if self.uri else (self.run_dir.parent / STORE).resolve()  # the default store's folder
        self.uri = self.uri or f"sqlite:///{self.store / 'mlflow.db'}"
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or self.run_dir.resolve().parent.name
        self.experiment_id: str | None = parent.mlflow_experiment_id if parent else None
        self.client: Any = None  # an MlflowClient, made at the start
        self.run_id: str | None = None

    @guarded
    def start(self, history: Sequence[dict[str, float]] = ()) -> None:
        """Create the run and log the params; a resumed run's earlier epochs too, so its curves are whole."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        if self.store is not None:
            self.store.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
        self.client = MlflowClient(self.uri)
        self.experiment_id = self.experiment_id or self._experiment_id()
        tags = {"cnnfit.run_dir": str(self.run_dir.resolve())}
        if self.parent is not None and self.parent.mlflow_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = self.parent.mlflow_run_id
        self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_dir.name, tags=tags).info.run_id
        record_id(self.run_dir, self.label, {"run_id": self.run_id, "experiment_id": self.experiment_id,
                                            "tracking_uri": _shown(self.uri)})
        params = [Param(k, v) for k, v in flat_params(self.params).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + PARAMS_PER_BATCH])
        for row in history:
            self._log(numeric(row), int(row["epoch"]))
        log.info(f"mlflow: run {self.run_id} in experiment '{self.experiment}' at {_shown(self.uri)}")

    @guarded
    def on_epoch_end(self, state: State) -> None:
        if self.run_id is not None:
            self._log(numeric(state.metrics), int(state.metrics["epoch"]))

    @guarded
    def finish(self, metrics: dict[str, Any], files: list[Path], prefix: str = "") -> None:
        """The final scores (`metrics`' numeric top-level values, keys prefixed, e.g. test_accuracy), the files
        (a folder's files under its name) as artifacts; then the run ends as FINISHED."""
        if self.run_id is None or self.ended:
            return
        self._log(numeric(metrics, prefix), self.step)
        for path in map(Path, files):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.end("FINISHED")

    @guarded
    def end(self, status: Status) -> None:
        """End the run as `status`, unless it has ended (or never started)."""
        if self.run_id is not None and not self.ended:
            self.client.set_terminated(self.run_id, status)
            self.ended = True

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)  # MLflow's timestamps are milliseconds
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in finite(values).items()])
        self.step = step

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        artifacts = (self.store / "artifacts").as_uri() if self.store else None  # else the store's or server's own
        try:
            return self.client.create_experiment(self.experiment, artifact_location=artifacts)
        except MlflowException:  # another process (a tuning worker) created it a moment ago
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, JSON values (null, true, [0.5, 0.75]), each cut to MLflow's
    length limit with a note saying so (config.yaml, also an artifact, has it whole)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > PARAM_LENGTH:
            note = f" ... (cut from {len(text)} characters to MLflow's limit; config.yaml has it whole)"
            text = text[:PARAM_LENGTH - len(note)] + note
        out[re.sub(r"[^\w\-. /:]", "_", f"{prefix}{key}")] = text  # the characters MLflow allows in a key
    return out


def _shown(uri: str) -> str:
    """The URI with any password in it starred, as tracking.json and the log show it."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


__all__ = ["HTTP_LIMITS", "MLflowRun", "STORE", "flat_params"]
