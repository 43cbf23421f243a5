import pytest

from cnnfit.config import VALID_KEYS, help_text, load_config, to_yaml
from cnnfit.errors import CnnfitError


def test_short_and_dotted_keys_land_in_the_tree():
    cfg = load_config(["data=./photos", "model=resnet18", "epochs=3", "lr=3e-3", "aug.hflip=true", "batch=32"])
    assert cfg.data.source == "./photos"
    assert cfg.model.name == "resnet18"
    assert cfg.train.epochs == 3 and cfg.train.batch == 32
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.aug.hflip is True


def test_file_then_command_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  batch: 16\nmodel: lenet5\n")
    cfg = load_config([f"config={f}", "epochs=2"])
    assert cfg.train.epochs == 2  # command line beats the file
    assert cfg.train.batch == 16
    assert cfg.model.name == "lenet5"


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(["epochs=4", "lr=0.01", "imgsz=32"])
    f = tmp_path / "config.yaml"
    f.write_text(to_yaml(cfg))
    assert load_config([f"config={f}"]) == cfg


def test_auto_means_none():
    assert load_config(["lr=auto"]).optim.lr is None


@pytest.mark.parametrize("arg, fragment", [
    ("epoch=3", "did you mean 'epochs'"),
    ("optim.lrr=0.1", "did you mean 'optim.lr'"),
    ("epochs=0", "train.epochs=0 is invalid"),
    ("epochs=ten", "valid integer"),
    ("data.resize=stretch", "'squash', 'crop', 'pad' or 'center'"),
    ("novalue", "expected key=value"),
    ("compile=fast", "train.compile='fast' is invalid"),
    ("aug.hflip=sometimes", "aug.hflip='sometimes' is invalid"),
    ("aug.fill_mode=wrap", "'constant' or 'reflect'"),
])
def test_bad_input_names_the_problem(arg, fragment):
    with pytest.raises(CnnfitError, match=fragment):
        load_config([arg])


def test_switches_that_also_take_a_mode():
    cfg = load_config(["compile=reduce-overhead", "aug.hflip=alternate", "lookahead=5", "drop_last=true"])
    assert (cfg.train.compile, cfg.aug.hflip, cfg.train.lookahead, cfg.train.drop_last) == (
        "reduce-overhead", "alternate", 5, True)
    assert load_config(["compile=true", "aug.hflip=yes"]).train.compile is True
    assert load_config(["aug.hflip=true"]).aug.hflip is True


def test_config_is_frozen():
    cfg = load_config([])
    with pytest.raises(Exception):
        cfg.train.epochs = 3


def test_help_lists_every_key_with_its_default():
    rows = help_text()
    assert len(rows) == len(VALID_KEYS)
    assert ("epochs (train.epochs)", "10", "passes over the training split") in rows


def test_recipes_are_a_layer_under_the_config_file_and_the_command_line(tmp_path):
    from cnnfit.config import recipes

    assert {"mnist-fast", "fmnist-fast", "fmnist-best"} <= set(recipes())
    for name in recipes():  # every shipped recipe is a valid config on its own
        assert load_config([f"recipe={name}"]).data.source in ("mnist", "fashion-mnist", "cifar10")
    cfg = load_config(["recipe=fmnist-fast"])
    assert (cfg.model.name, cfg.model.width, cfg.eval.tta, cfg.data.merge_val) == ("fastnet", 0.5, "flip", True)
    file = tmp_path / "mine.yaml"
    file.write_text("train:\n  epochs: 9\n  batch: 32\n")
    cfg = load_config([f"config={file}", "batch=16", "recipe=fmnist-fast"])  # order on the line does not matter
    assert (cfg.train.epochs, cfg.train.batch, cfg.model.width) == (9, 16, 0.5)
    with pytest.raises(CnnfitError, match="unknown recipe .fmnist-slow.; choose from: cifar10-speed, fmnist-best, fmnist-fast"):
        load_config(["recipe=fmnist-slow"])
