"""`cnnfit predict imagenet:MODEL`: a zoo model's shipped ImageNet head answers before any training, decoded as
its weights were trained (shorter side to 256, centre crop 224, bicubic)."""

import json

from cnnfit.cli import main
from tests.conftest import shared_dataset


def test_the_imagenet_head_names_ants_and_bees_with_no_training(tmp_path, capsys):
    val = shared_dataset("hymenoptera_data") / "val"
    out = tmp_path / "zero_shot.json"
    assert main(["predict", "imagenet:efficientnet_lite0", str(val), f"out={out}", "format=json"]) == 0
    rows = json.loads(out.read_text())
    for kind, name in (("ants", "ant"), ("bees", "bee")):
        mine = [r for r in rows if f"/{kind}/" in r["file"]]
        found = sum(name in [r[f"top{k}"] for k in range(1, 6)] for r in mine) / len(mine)
        assert len(mine) > 60 and found >= 0.8, f"{name} in the top 5 of {found:.0%} of {len(mine)} {kind}"


def test_a_model_without_imagenet_weights_is_one_line(capsys):
    assert main(["predict", "imagenet:resnet81", "x.jpg"]) == 2
    err = capsys.readouterr().err
    assert "no ImageNet weights for 'resnet81'; choose from: efficientnet_lite0" in err and err.count("\n") == 1
