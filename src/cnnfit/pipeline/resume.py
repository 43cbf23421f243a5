"""What `resume=RUN` may continue: the run's own config with the given keys on top, refused when a key or the
data would change what the run computes."""

from __future__ import annotations

from pathlib import Path

from cnnfit.config import Config, flatten, is_module_name, load_config
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.pipeline.resolve import absolute

# settings that change how a run is watched, or where its data is read from, never what it computes
RESUME_SAFE = {"train.device", "train.log_every", "train.time", "train.ckpt_every", "train.profile",
               "train.tensorboard", "train.track", "train.repeats", "train.devices", "train.dist_timeout",
               "data.workers", "data.cache", "data.stream", "data.download",
               "eval.calibrate", "eval.tta", "eval.tta_shift", "eval.report", "resume.run", "resume.force"}


def resume_config(cfg: Config) -> tuple[Config, Path, dict]:
    """The run's own config with the given keys on top, its directory and last.pt; a key that would change the
    run is refused."""
    run_dir = Path(cfg.resume.run)
    if not (run_dir / "last.pt").is_file():
        raise CnnfitError(f"'{run_dir}' has no last.pt to resume from; pass a run directory written by cnnfit train")
    ckpt = load_checkpoint(run_dir / "last.pt")
    if "train_state" not in ckpt:
        raise CnnfitError(f"{run_dir / 'last.pt'} was written by an older cnnfit without resume state; "
                          "start a new run")
    saved = _saved_config(ckpt, run_dir / "last.pt", cfg)
    given = flatten(cfg.model_dump(mode="json", exclude_unset=True))  # the keys given, even when equal to a default
    given = {k: absolute(v) if k in ("data.source", "model.init") and v else v for k, v in given.items()}
    changed = [k for k, v in given.items() if k not in RESUME_SAFE and saved.get(k) != v]
    if changed and not cfg.resume.force:
        k = changed[0]
        more = f" (and {', '.join(changed[1:])})" if len(changed) > 1 else ""
        raise CnnfitError(f"resume: {k}={given[k]!r} differs from the run's {k}={saved.get(k)!r}{more} and would "
                          "change the run; drop it, or add resume.force=true")
    merged = load_config(**{**saved, **given})
    return merged, run_dir, ckpt


def _saved_config(ckpt: dict, path: Path, cfg: Config) -> dict:
    """The run's config as last.pt holds it, flat. last.pt is a file: a pkg.mod:Class model it names is imported
    only when the user names the same model or gives trust_code=true."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise CnnfitError(f"{path} holds no run config; it is damaged or not written by cnnfit train")
    saved = flatten(saved)
    saved.pop("model.trust_code", None)  # only the user can trust code, never the file
    name = saved.get("model.name")
    if is_module_name(name) and not cfg.model.trust_code and cfg.model.name != name:
        raise CnnfitError(f"{path} names model {name!r}, which runs code from the file; if you trust it, "
                          "add trust_code=true")
    return saved


__all__ = ["RESUME_SAFE", "resume_config"]
