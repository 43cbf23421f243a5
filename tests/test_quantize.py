"""int8 ONNX export: static (calibrated on training images) and dynamic quantization keep the fp32 file's contract
(uint8 "images" in, float32 "probs" out, the same metadata), agree with torch within their own tolerance, load in
predict and serve like any .onnx, and leave no file behind when the tolerance is missed."""

import io
import json

import numpy as np
import pytest
from PIL import Image

import cnnfit
from cnnfit import export as X
from cnnfit import quantize as Q
from cnnfit.cli import ExportOptions, main
from cnnfit.config import Config
from cnnfit.engine import load_checkpoint
from cnnfit.pipeline.prepare import load_data
from cnnfit.predictor import load_predictor

QUIET: dict = {}  # the API logs; nothing to silence


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # no report.html: these tests read best.pt and split.json only, and the fixture takes half the time
    return cnnfit.train(data="digits", epochs=3, eval__report=False, project=str(tmp_path_factory.mktemp("runs")),
                        **QUIET)


@pytest.fixture(scope="module")
def fp32_record(run):
    return X.export(run.dir, check_images=100, **QUIET)


@pytest.fixture(scope="module")
def int8_record(run, fp32_record):
    return X.export(run.dir, quantize="int8", check_images=None, **QUIET)


def _val(run_dir):
    """(N, C, H, W) uint8 val images of the run and their labels, as training decoded them."""
    ds = load_data(Config.model_validate(load_checkpoint(run_dir / "best.pt")["config"]))[0]
    idx = np.asarray(json.loads((run_dir / "split.json").read_text())["val"])
    return np.asarray(ds.images[idx]), ds.labels[idx]


def _meta(path):
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_int8_agrees_with_torch_within_its_tolerance_and_is_smaller(run, int8_record, fp32_record):
    images, _ = _val(run.dir)
    parity = int8_record["parity"]
    assert int8_record["path"] == str(run.dir / "model.int8.onnx")
    assert parity["images"] == len(images) > 200 and parity["split"] == "val"
    assert parity["agreement"] >= Q.INT8_AGREEMENT and parity["drop"] <= Q.INT8_DROP
    assert parity["accuracy"] > 0.8 and parity["limits"] == {"agreement": Q.INT8_AGREEMENT, "drop": Q.INT8_DROP}
    records = json.loads((run.dir / "export.json").read_text())
    assert records["onnx-int8"]["parity"] == parity and records["onnx"]["path"] == str(run.dir / "model.onnx")
    assert int8_record["bytes"]["model.int8.onnx"] < fp32_record["bytes"]["model.onnx"]
    assert not list(run.dir.glob(".*tmp*"))


def test_int8_file_keeps_the_fp32_contract_and_metadata(run, int8_record, fp32_record):
    import onnx
    import onnxruntime as ort

    fp32, int8 = _meta(run.dir / "model.onnx"), _meta(run.dir / "model.int8.onnx")
    assert {k: v for k, v in int8.items() if k in fp32 and k != "parity"} == {k: v for k, v in fp32.items()
                                                                             if k != "parity"}
    assert int8["quantize"] == "int8" and json.loads(int8["quantization"])["calibration_images"] == Q.CALIBRATION_IMAGES
    assert json.loads(int8["parity"]) == int8_record["parity"]
    session = ort.InferenceSession(str(run.dir / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    (i,), (o,) = session.get_inputs(), session.get_outputs()
    assert (i.name, i.type, o.name, o.type) == ("images", "tensor(uint8)", "probs", "tensor(float)")
    nodes = onnx.load(str(run.dir / "model.int8.onnx")).graph.node
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in nodes}
    assert nodes[0].op_type == "Cast" and nodes[-1].op_type == "Softmax"  # pixels -> float, and the softmax: float


def test_predict_and_serve_take_the_int8_file(run, int8_record, tmp_path):
    from fastapi.testclient import TestClient

    from cnnfit.serve import create_app

    images, labels = _val(run.dir)
    int8 = load_predictor(run.dir / "model.int8.onnx")
    assert int8.backend == "onnx" and int8.classes == [str(d) for d in range(10)]
    probs = int8.predict(images)  # (N, 10) float32
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (probs.argmax(1) == load_predictor(run.dir).predict(images).argmax(1)).mean() >= Q.INT8_AGREEMENT
    for k, img in enumerate(images[:20]):
        Image.fromarray(img[0]).save(tmp_path / f"{k:02d}.png")
    rows = cnnfit.predict(run.dir / "model.int8.onnx", [str(tmp_path)], topk=1, out=tmp_path / "p.csv", **QUIET)
    assert [r["top1"] for r in rows.rows()] == [str(k) for k in probs[:20].argmax(1)]
    buf = io.BytesIO()
    Image.fromarray(images[0][0]).save(buf, "PNG")
    with TestClient(create_app(int8)) as client:
        r = client.post("/predict?topk=1", files=[("files", ("a.png", buf.getvalue(), "image/png"))])
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["top"][0]["class"] == str(probs[0].argmax())
        assert client.get("/model").json()["info"]["quantize"] == "int8"  # which file answers is visible


def test_a_missed_tolerance_raises_one_line_and_leaves_no_file(run, tmp_path):
    before = sorted(run.dir.iterdir())
    # int8 would have to beat torch by 5 points on val: no calibration reaches that
    with pytest.raises(cnnfit.CnnfitError, match="misses its tolerance.*nothing was written.*calibration_images") as e:
        X.export(run.dir, quantize="int8", int8_drop=-5, out=tmp_path / "m.int8.onnx", check_images=100, **QUIET)
    assert "\n" not in str(e.value) and "limit -5" in str(e.value)
    assert not list(tmp_path.iterdir()) and sorted(run.dir.iterdir()) == before


def test_dynamic_quantization_is_checked_the_same_way(run, tmp_path):
    record = X.export(run.dir, quantize="dynamic", out=tmp_path / "d.onnx", check_images=200, **QUIET)
    assert record["parity"]["agreement"] >= Q.INT8_AGREEMENT and record["parity"]["drop"] <= Q.INT8_DROP
    assert _meta(tmp_path / "d.onnx")["quantize"] == "dynamic"
    assert json.loads((run.dir / "export.json").read_text())["onnx-dynamic"]["path"] == str(tmp_path / "d.onnx")
    images, _ = _val(run.dir)
    assert load_predictor(tmp_path / "d.onnx").predict(images[:4]).shape == (4, 10)


def test_nhwc_int8_calibrates_on_channels_last_pixels(run, tmp_path):
    record = X.export(run.dir, quantize="int8", layout="nhwc", calibration_images=64, out=tmp_path / "n.onnx",
                      check_images=200, **QUIET)
    assert record["input"]["shape"] == ["N", 8, 8, 1] and record["parity"]["agreement"] >= Q.INT8_AGREEMENT
    assert json.loads(_meta(tmp_path / "n.onnx")["quantization"]) == record["quantization"]
    assert record["quantization"]["calibration_images"] == 64 and record["quantization"]["format"] == Q.QUANT_FORMAT


@pytest.mark.parametrize("kwargs, fragment", [
    ({"format": "torchscript", "quantize": "int8"}, "quantize=int8 is for format=onnx"),
    ({"format": "safetensors", "quantize": "dynamic"}, "quantize=dynamic is for format=onnx"),
    ({"quantize": "int4"}, "choose from: int8, dynamic"),
    ({"quantize": "int8", "calibration_images": 0}, "calibration_images=0 must be 1 or more"),
    ({"quantize": "int8", "int8_agreement": 1.01}, "int8_agreement=1.01 is a fraction"),
])
def test_bad_quantize_settings_are_refused_in_one_line(run, tmp_path, kwargs, fragment):
    with pytest.raises(cnnfit.CnnfitError, match=fragment) as e:
        X.export(run.dir, out=tmp_path / "x.onnx", **kwargs, **QUIET)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_cli_takes_the_new_keys(run, tmp_path, capsys):
    out = tmp_path / "c.onnx"
    assert main(["export", str(run.dir), "quantize=int8", "calibration_images=32", "int8_agreement=0.9",
                 "int8_drop=2.5", "check_images=100", f"out={out}"]) == 0
    record = json.loads((run.dir / "export.json").read_text())["onnx-int8"]
    assert record["path"] == str(out) and record["parity"]["limits"] == {"agreement": 0.9, "drop": 2.5}
    assert json.loads(_meta(out)["quantization"])["calibration_images"] == 32
    assert main(["export", str(run.dir), "format=torchscript", "quantize=int8"]) == 2
    err = capsys.readouterr().err
    assert "is for format=onnx" in err and err.strip().count("\n") == 0
    assert main(["export", str(run.dir), "quantize=int4"]) == 2
    assert "choose from: int8, dynamic" in capsys.readouterr().err


def test_cli_defaults_are_the_librarys():
    keys = ExportOptions.model_fields
    assert keys["quantize"].default is None
    assert (keys["calibration_images"].default, keys["int8_agreement"].default, keys["int8_drop"].default) == \
        (Q.CALIBRATION_IMAGES, Q.INT8_AGREEMENT, Q.INT8_DROP)
