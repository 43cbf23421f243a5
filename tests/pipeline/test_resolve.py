"""The defaults the data chooses: what each kind of images gets, that a key the user set always wins, and that every
choice is in the run summary with its reason and in config.yaml."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import cnnfit
from cnnfit.config import load_config
from cnnfit.data.look import look
from cnnfit.pipeline.resolve import by_data, by_size, kind_of
from tests.conftest import COLORS, make_folder, write_image


def _photos(root, per_class=6, size=(160, 120)):
    rng = np.random.default_rng(0)
    for name, color in list(COLORS.items())[:2]:
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", color, size, rng)
    return root


def _chosen(rows) -> dict:
    return {key: value for key, value, _ in rows}


def test_a_photo_folder_gets_the_imagenet_backbone_its_recipe_and_photo_augmentation(tmp_path):
    seen = look(str(_photos(tmp_path / "photos")))
    assert (seen.images, seen.channels, seen.side, seen.mixed) == (12, 3, 120, False)
    assert kind_of(seen)[0] == "photos"
    cfg, rows = by_data(load_config([f"data={tmp_path / 'photos'}"]), seen)
    chosen = _chosen(rows)
    assert chosen["model.name"] == "efficientnet_lite0" and chosen["model.init"] == "imagenet"
    assert chosen["aug.preset"] == "photos" and chosen["aug.hflip"] is True and chosen["aug.resized_crop"] == 0.25
    assert cfg.model.init == "imagenet" and cfg.aug.hflip is True
    assert all(why for _, _, why in rows)  # every choice says why


def test_photos_from_scratch_get_a_batch_normalised_net_at_64_px(tmp_path):
    cfg, rows = by_data(load_config([f"data={tmp_path}", "init=none"]), look(str(_photos(tmp_path / "p"))))
    chosen = _chosen(rows)
    assert (chosen["model.name"], chosen["data.imgsz"], chosen["aug.preset"]) == ("fastnet", 64, "photos")
    assert "model.init" not in chosen and cfg.model.init == "none"


def test_glyphs_get_shifts_and_rotations_and_no_flips():
    seen = look("digits")
    assert (seen.images, seen.channels, seen.side) == (1797, 1, 8)
    cfg, rows = by_data(load_config(["data=digits"]), seen)
    chosen = _chosen(rows)
    assert chosen == {"model.name": "simplecnn", "aug.preset": "glyphs", "aug.shift": 0.05, "aug.rotation": 5}
    assert cfg.aug.hflip is False and cfg.aug.vflip is False


def test_a_tiny_dataset_gets_small_batches_more_epochs_and_early_stopping(tmp_path):
    folder = make_folder(tmp_path / "tiny", per_class=8)  # 24 small colour images: 16 of them train
    cfg, rows = by_data(load_config([f"data={folder}"]), look(str(folder)))
    assert _chosen(rows)["aug.preset"] == "small-photos" and cfg.model.name == "fastnet"
    assert all(why for _, _, why in rows)
    cfg, rows = by_size(cfg, n_train=16)
    assert _chosen(rows) == {"train.batch": 8, "train.epochs": 60, "train.patience": 15}
    cfg, rows = by_size(load_config(["data=digits"]), n_train=50_000)  # a large set: the floor of 10 epochs
    assert _chosen(rows) == {"train.epochs": 10, "train.patience": 5}


def test_what_the_user_sets_wins_and_aug_none_turns_augmentation_off(tmp_path):
    seen = look("digits")
    cfg, rows = by_data(load_config(["data=digits", "model=resnet20", "aug.shift=0.2"]), seen)
    assert cfg.model.name == "resnet20" and cfg.aug.shift == 0.2 and cfg.aug.rotation == 5
    assert "model.name" not in _chosen(rows) and "aug.shift" not in _chosen(rows)
    cfg, rows = by_data(load_config(["data=digits", "aug=none"]), seen)
    assert not any(key.startswith("aug.") for key in _chosen(rows)) and cfg.aug.shift == 0
    cfg, rows = by_size(load_config(["data=digits", "epochs=3", "time=2"]), n_train=1000)
    assert cfg.train.epochs == 3 and _chosen(rows) == {"train.patience": 10}


def test_init_none_trains_from_random_weights(tmp_path):
    run = cnnfit.train(data="digits", init="none", epochs=2, project=str(tmp_path), **{"eval.report": False})
    assert run.accuracy > 0.5 and not (run.dir / "init.json").exists()


def test_a_linear_probe_gets_no_augmentation(tmp_path):
    cfg, rows = by_data(load_config(["freeze=backbone", "init=imagenet", "model=efficientnet_lite0"]),
                        look(str(_photos(tmp_path / "p"))))
    assert _chosen(rows) == {"aug.preset": "none"} and cfg.aug.resized_crop == 0


def test_the_run_summary_and_config_yaml_hold_every_choice_with_its_reason(tmp_path, capsys):
    from cnnfit.cli import main

    assert main(["train", "data=digits", "epochs=2", f"project={tmp_path}", "name=d", "eval.report=false"]) == 0
    out = capsys.readouterr().out
    for key, reason in (("model.name", "glyphs, grayscale images of 8 px"), ("aug.preset", "aug=none turns it off"),
                        ("aug.shift", "no flips"), ("train.patience", "early stopping")):
        assert any(line.startswith(key) and reason in line for line in out.splitlines()), key
    saved = yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())
    assert saved["aug"]["preset"] == "glyphs" and saved["aug"]["rotation"] == 5 and saved["train"]["patience"] == 5
    again = cnnfit.train(config=str(tmp_path / "d" / "config.yaml"), epochs=1, name="again", project=str(tmp_path))
    assert again.metrics["accuracy"] > 0.5  # the file repeats the run: every choice is now a set key


@pytest.mark.parametrize("spent, expected", [(0.0, 1.0), (30.0, 0.5), (60.0, 0.0)])
def test_a_time_budget_decays_the_lr_over_the_budget(spent, expected):
    import torch

    from cnnfit.engine import make_schedule
    from cnnfit.engine.callbacks import LRSchedule, TimeBudget

    budget = TimeBudget(1.0)
    budget.spent = spent  # seconds of a 60 s budget already used (as by a resumed run)
    schedule = LRSchedule(make_schedule("cosine", total=1000), budget=budget, total=1000)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule.on_fit_start(SimpleNamespace(step=0, lr_scale=1.0, optimizer=optimizer))  # step 0 of 1000
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * expected, abs=1e-3)
