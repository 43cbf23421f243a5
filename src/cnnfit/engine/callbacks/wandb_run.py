"""Track a run on Weights & Biases: the resolved config, every epoch's metrics (step = epoch), the final scores in
the run's summary and the run's key files. Offline, into the run directory, unless an API key is configured, so a
run never waits on the network or a login prompt; upload it later with `wandb sync`. WANDB_MODE, WANDB_DIR and
WANDB_PROJECT, when set, decide instead."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnfit.engine.callbacks.tracking import Parent, Status, Tracker, finite, guarded, numeric, record_id
from cnnfit.engine.state import State

log = logging.getLogger(__name__)

# wandb.Settings given where the user has not set the WANDB_ variable of the same name
SETTINGS = {
    "console": "off",  # leave stdout alone: wandb's capture would wrap the progress display's writes
    "silent": True,  # cnnfit logs the one line that matters (where the run is, how to upload it)
    "init_timeout": 30.0,  # seconds for wandb's service to start the run (its default, 90 s, stalls a run's start)
}
DEFAULT_HOST = "https://api.wandb.ai"  # wandb's own default for WANDB_BASE_URL


class WandbRun(Tracker):
    """One wandb run per cnnfit run, named as its run directory, whose tracking.json records the wandb run id.

    `params`: the resolved config as a nested dict. `project`: None: WANDB_PROJECT, else the project folder's name.
    `parent`: the tuning study whose trials are grouped (wandb's group = the study's name).
    The pipeline calls `finish` with the final scores, or `end` when the run fails.
    """

    label = "wandb"
    env: dict[str, str] = {}  # wandb's own limits apply (SETTINGS)

    def __init__(self, run_dir: Path, *, params: dict[str, Any], project: str | None = None,
                 parent: Parent | None = None) -> None:
        super().__init__(run_dir, params=params, parent=parent)
        self.project = project or os.environ.get("WANDB_PROJECT") or self.run_dir.resolve().parent.name
        self.run: Any = None

    @guarded
    def start(self, history: Sequence[dict[str, float]] = ()) -> None:
        """Start the run with the config; a resumed run's earlier epochs too, so its curves are whole."""
        import wandb

        mode = None if os.environ.get("WANDB_MODE") else "online" if has_api_key() else "offline"
        settings = {k: v for k, v in SETTINGS.items() if f"WANDB_{k.upper()}" not in os.environ}
        self.run = wandb.init(
            project=self.project, name=self.run_dir.name, config=self.params, mode=mode,
            dir=None if os.environ.get("WANDB_DIR") else str(self.run_dir),
            group=self.parent.name if self.parent else None, job_type="trial" if self.parent else "train",
            reinit="create_new",  # a run of its own, whatever wandb run the calling code has open
            settings=wandb.Settings(**settings))
        if self.run.settings.mode == "disabled":  # WANDB_MODE=disabled: a stand-in run that keeps nothing
            self.run = None
            return
        sync_dir = Path(self.run.settings.sync_dir).resolve()  # what `wandb sync` takes
        record_id(self.run_dir, self.label, {"run_id": self.run.id, "project": self.project,
                                            "mode": self.run.settings.mode, "dir": str(sync_dir)})
        for row in history:
            self._log(row)
        offline = self.run.settings.mode in ("offline", "dryrun")
        where = f"offline in {sync_dir}; upload with: wandb sync {sync_dir}" if offline else f"at {self.run.url}"
        log.info(f"wandb: run {self.run.id} {where}")

    @guarded
    def on_epoch_end(self, state: State) -> None:
        if self.run is not None:
            self._log(state.metrics)

    @guarded
    def finish(self, metrics: dict[str, Any], files: list[Path], prefix: str = "") -> None:
        """The final scores (`metrics`' numeric top-level values, keys prefixed, e.g. test_accuracy) into the run's
        summary, and the files copied into the run's files folder, which wandb uploads with the run, under the run
        directory's name (wandb's own config.yaml sits in that folder's root); then the run ends."""
        if self.run is None or self.ended:
            return
        self.run.summary.update(finite(numeric(metrics, prefix)))
        into = Path(self.run.dir) / self.run_dir.name  # copies, not wandb.save's links: `wandb sync` works after the
        for path in map(Path, files):  # run directory has moved
            if path.is_dir():
                shutil.copytree(path, into / path.name, dirs_exist_ok=True)
            elif path.is_file():
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into / path.name)
        self.end("FINISHED")

    @guarded
    def end(self, status: Status) -> None:
        """End the run, as failed (exit code 1) unless `status` is FINISHED."""
        if self.run is not None and not self.ended:
            self.ended = True
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)

    def _log(self, metrics: dict[str, Any]) -> None:
        self.step = int(metrics["epoch"])
        self.run.log(finite(numeric(metrics)), step=self.step)


def has_api_key() -> bool:
    """Whether wandb would find credentials without asking: WANDB_API_KEY, an identity token file, or a netrc entry
    for the host (wandb's own netrc reader where this wandb has it)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return bool(read_netrc_auth(host=os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST))
    except Exception:  # an older wandb without this reader, or an unreadable netrc: the environment alone decides
        return False


__all__ = ["SETTINGS", "WandbRun", "has_api_key"]
