"""ImageNet weights of the torchvision families: the real download path against an HTTP server on 127.0.0.1 serving
a real weights file, its checks (hash, length, leftovers, offline), and each family's key set against torchvision's."""

import hashlib
import io
import re
from dataclasses import replace

import pytest
import torch

from cnnfit import models
from cnnfit.errors import CnnfitError
from cnnfit.models import torchvision_weights as tv
from cnnfit.models.weights import to_torchvision
from tests.local_server import LocalServer

# torchvision 0.28's builders at 1000 classes: state_dict tensors (googlenet without its aux heads) and the
# parameter count its docs publish per weights file
TORCHVISION = {
    "resnet18": (122, 11_689_512), "resnet34": (218, 21_797_672), "resnet50": (320, 25_557_032),
    "alexnet": (16, 61_100_840), "vgg11": (22, 132_863_336), "vgg11_bn": (62, 132_868_840),
    "vgg13": (26, 133_047_848), "vgg13_bn": (76, 133_053_736), "vgg16": (32, 138_357_544),
    "vgg16_bn": (97, 138_365_992), "vgg19": (38, 143_667_240), "vgg19_bn": (118, 143_678_248),
    "googlenet": (344, 6_624_904), "mobilenet_v2": (314, 3_504_872),
}
HEAD = {"resnet": "fc", "alexnet": "classifier.6", "vgg": "classifier.6", "googlenet": "fc",
        "mobilenet": "classifier.1"}  # where torchvision keeps the 1000-class Linear


@pytest.fixture(scope="module")
def resnet18_file() -> tuple[dict[str, torch.Tensor], bytes]:
    """A cnnfit resnet18's state_dict, and the same tensors saved under torchvision's names as its files hold them
    (47 MB)."""
    torch.manual_seed(0)
    model = models.create("resnet18", num_classes=1000, imgsz=224)
    buf = io.BytesIO()
    torch.save(to_torchvision(model.state_dict(), model), buf)
    return model.state_dict(), buf.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The server, the weights cache in tmp_path, and no proxy between them."""
    srv = LocalServer()
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CNNFIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("CNNFIT_WEIGHTS_URL", srv.url)
    yield srv
    srv.stop()


def _publish(server, monkeypatch, name: str, body: bytes, served: bytes | None = None, **kwargs) -> str:
    """Name the file for `body`'s SHA-256 as torchvision does, make the table point at it, serve `served` (or
    `body`) under that name; returns the file name."""
    file = f"{name}-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    monkeypatch.setitem(tv.WEIGHTS, name, replace(tv.WEIGHTS[name], file=file))
    server.serve(file, body if served is None else served, **kwargs)
    return file


def test_first_use_downloads_and_checks_then_works_offline(server, monkeypatch, tmp_path, resnet18_file):
    want, body = resnet18_file
    file = _publish(server, monkeypatch, "resnet18", body)
    state_dict, meta = models.imagenet_weights("resnet18")
    assert server.requests == ["/" + file] and [p.name for p in (tmp_path / "weights").iterdir()] == [file]
    assert state_dict.keys() == want.keys() and all(torch.equal(state_dict[k], want[k]) for k in want)
    models.create("resnet18", num_classes=1000, imgsz=meta["imgsz"]).load_state_dict(state_dict, strict=True)
    assert meta["source"] == server.url + file and meta["top1"] == 69.758 and meta["imgsz"] == 224
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["crop_pct"] == 0.875 and meta["interpolation"] == "bilinear" and meta["num_classes"] == 1000
    server.stop()  # offline from here: the cached file serves
    again, _ = models.imagenet_weights("resnet18")
    assert all(torch.equal(again[k], want[k]) for k in want) and len(server.requests) == 1


def test_corrupt_download_is_refused_and_leaves_nothing(server, monkeypatch, tmp_path, resnet18_file):
    _, body = resnet18_file
    corrupt = bytearray(body)
    corrupt[len(body) // 2] ^= 0xFF  # one flipped byte, same length
    file = _publish(server, monkeypatch, "resnet18", body, served=bytes(corrupt))
    expected = file.removesuffix(".pth").rsplit("-", 1)[1]
    with pytest.raises(CnnfitError, match=rf"is corrupt \(sha256 [0-9a-f]{{64}}, expected {expected}\)"):
        models.imagenet_weights("resnet18")
    assert list((tmp_path / "weights").iterdir()) == []


def test_a_truncated_download_leaves_nothing(server, monkeypatch, tmp_path, resnet18_file):
    _, body = resnet18_file
    _publish(server, monkeypatch, "resnet18", body, served=body[: len(body) // 3], length=len(body))
    with pytest.raises(CnnfitError, match=rf"is incomplete \({len(body) // 3:,} of {len(body):,} bytes\)"):
        models.imagenet_weights("resnet18")
    assert list((tmp_path / "weights").iterdir()) == []


def test_offline_without_the_file_names_the_address_and_where_to_put_it(server, monkeypatch, tmp_path):
    server.stop()
    with pytest.raises(CnnfitError) as err:
        models.imagenet_weights("mobilenet_v2")
    url, path = server.url + "mobilenet_v2-b0353104.pth", tmp_path / "weights" / "mobilenet_v2-b0353104.pth"
    message = str(err.value)
    assert f"cannot download {url} (" in message and message.endswith(f"put it at {path}") and "\n" not in message
    assert list((tmp_path / "weights").iterdir()) == []


def test_a_cached_file_that_fails_its_hash_is_refused(server, monkeypatch, tmp_path):
    path = tmp_path / "weights" / tv.WEIGHTS["alexnet"].file
    path.parent.mkdir()
    path.write_bytes(b"not the weights")
    with pytest.raises(CnnfitError, match=re.escape(f"{path} is not alexnet's ImageNet weights") + ".*delete it"):
        models.imagenet_weights("alexnet")
    assert server.requests == []


def test_googlenet_drops_the_untrained_aux_heads_and_takes_old_files(server, monkeypatch):
    torch.manual_seed(0)
    model = models.create("googlenet", num_classes=1000, imgsz=224, aux=True)
    buf = io.BytesIO()  # as saved before PyTorch 0.4.1: no BN counters
    torch.save({k: v for k, v in to_torchvision(model.state_dict(), model).items()
                if not k.endswith("num_batches_tracked")}, buf)
    _publish(server, monkeypatch, "googlenet", buf.getvalue())
    state_dict, meta = models.imagenet_weights("googlenet")
    models.create("googlenet", num_classes=1000, imgsz=224).load_state_dict(state_dict, strict=True)
    assert torch.equal(state_dict["head.weight"], model.head.weight) and meta["mean"] == meta["std"] == [0.5] * 3
    assert not any(k.startswith("aux") for k in state_dict)


def test_every_listed_family_has_torchvision_s_keys_and_size():
    assert sorted(tv.WEIGHTS) == sorted(TORCHVISION)
    for name, (tensors, params) in TORCHVISION.items():
        with torch.device("meta"):  # shapes only: no 144M-parameter init
            model = models.create(name, num_classes=1000, imgsz=224)
        names = to_torchvision(model.state_dict(), model)
        head = next(h for family, h in HEAD.items() if name.startswith(family))
        assert len(names) == tensors and sum(p.numel() for p in model.parameters()) == params, name
        assert names[f"{head}.weight"].shape[0] == 1000 and not any(k.startswith("head.") for k in names), name
        assert re.fullmatch(rf"{name}(-owt)?-[0-9a-f]{{8}}\.pth", tv.WEIGHTS[name].file), name


def test_the_zoo_lists_its_imagenet_models_and_names_them_in_errors():
    assert models.imagenet_models()[:4] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                            "resnet18"]
    assert models.has_imagenet_weights("vgg16_bn") and not models.has_imagenet_weights("resnet20")
    assert set(models.imagenet_models()) <= set(models.list_models())
    with pytest.raises(CnnfitError, match="no ImageNet weights for 'resnet20'; choose from: .*resnet18, resnet34"):
        models.imagenet_weights("resnet20")
