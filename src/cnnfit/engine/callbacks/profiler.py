from __future__ import annotations

import warnings
from pathlib import Path

from torch.profiler import ProfilerActivity, profile, schedule

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State

ROW_LIMIT = 20  # operators in profile.txt: the top of the table is where the time goes


class Profile(Callback):
    """Profile a few training steps with torch.profiler and write `trace.json` (Chrome trace: open it in
    chrome://tracing or ui.perfetto.dev) and `profile.txt` (top operators by self CPU time, with memory).

    Steps: `wait` skipped (the first step pays one-off costs), `warmup` traced but discarded (profiler start-up),
    then `active` recorded. A profiler problem is written into profile.txt and never stops training.
    """

    def __init__(self, run_dir: Path, *, wait: int = 1, warmup: int = 1, active: int = 3) -> None:
        self.run_dir = Path(run_dir)
        self.wait, self.warmup, self.active = wait, warmup, active
        self.prof: profile | None = None
        self.steps = 0  # training steps since the profiler started
        self.written = False

    def on_fit_start(self, state: State) -> None:
        cuda = any(p.is_cuda for p in state.model.parameters())
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        try:
            self.prof = profile(activities=activities, record_shapes=True, profile_memory=True,
                                schedule=schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
                                on_trace_ready=self._write)
            self.prof.start()
        except Exception as exc:  # e.g. another profiler already running
            self._fail("could not start the profiler", exc)

    def on_step_end(self, state: State) -> None:
        if self.prof is None:
            return
        self.steps += 1
        try:
            self.prof.step()  # calls _write when the active window closes
            if self.written:
                self._stop()
        except Exception as exc:
            self._fail(f"profiling failed at step {state.step}", exc)

    def on_fit_end(self, state: State) -> None:
        if self.prof is None:
            return
        try:
            self._stop()  # inside the active window this writes what was recorded
        except Exception as exc:
            self._fail("could not stop the profiler", exc)
            return
        if not self.written:
            self._note(f"training ended after {self.steps} steps, before the profiler recorded any "
                       f"(wait={self.wait}, warmup={self.warmup}, active={self.active}); "
                       f"profile a longer run or lower wait/warmup")

    def _stop(self) -> None:
        prof, self.prof = self.prof, None
        if prof is not None:
            prof.stop()

    def _write(self, prof: profile) -> None:
        self.written = True
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            averages = prof.key_averages()
            tables = [averages.table(sort_by="self_cpu_time_total", row_limit=ROW_LIMIT)]
            if ProfilerActivity.CUDA in prof.activities:
                tables.append(averages.table(sort_by="self_device_time_total", row_limit=ROW_LIMIT))
            tmp = self.run_dir / ".trace.json.tmp"
            prof.export_chrome_trace(str(tmp))
            tmp.replace(self.run_dir / "trace.json")
        except Exception as exc:  # the caller stops the profiler: stopping it here, inside prof.step(), is unsafe
            self._note(f"could not export the profile: {type(exc).__name__}: {exc}\ntraining went on")
            return
        recorded = min(self.active, max(self.steps - self.wait - self.warmup, 0))
        header = (f"torch.profiler, steps recorded: {recorded} of {self.active} (after wait={self.wait}, "
                  f"warmup={self.warmup}); top {ROW_LIMIT} operators by self CPU time, memory in the CPU Mem "
                  f"columns. Timeline: trace.json in chrome://tracing or ui.perfetto.dev\n\n")
        self._note(header + "\n\n".join(tables))

    def _fail(self, what: str, exc: Exception) -> None:
        try:
            self._stop()  # a profiler left running would slow every later step
        except Exception:  # already broken; the note below says why
            pass
        self._note(f"{what}: {type(exc).__name__}: {exc}\ntraining went on without profiling")

    def _note(self, text: str) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "profile.txt").write_text(text + "\n")
        except OSError as exc:  # a full or read-only disk must not end the training run
            warnings.warn(f"profile.txt not written ({exc}): {text.splitlines()[0]}", stacklevel=2)
