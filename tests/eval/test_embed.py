"""Embeddings: a trained model's features put same-class images together, far better than an untrained model's;
the features are the same through every wrapper; nearest neighbours equal a brute-force sort at any chunk size."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import cnnfit
from cnnfit import models
from cnnfit.data import load_imageset, resolve
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.eval.embed import features, head_of, nearest
from cnnfit.predictor import pixels_module

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A digits run (6 epochs: ~96% test accuracy), its checkpoint, the images and the run's train and test rows."""
    run = cnnfit.train(data="digits", epochs=6, seed=0, project=str(tmp_path_factory.mktemp("runs")),
                       **{"eval.report": False})
    ds = load_imageset(resolve("digits"), None, None, "squash", None, True)[0]
    split = json.loads((run.dir / "split.json").read_text())
    return load_checkpoint(run.dir / "best.pt"), ds, np.asarray(split["train"]), np.asarray(split["test"])


def _agreement(f_train: np.ndarray, f_test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray) -> float:
    """The share of (test image, one of its 5 nearest train images) pairs whose classes match."""
    ids, _ = nearest(f_test, f_train, 5)  # (N_test, 5)
    return float((y_train[ids] == y_test[:, None]).mean())


def test_trained_embedding_neighbours_share_the_class_and_an_untrained_models_do_not(digits):
    ckpt, ds, tr, te = digits
    y_tr, y_te = ds.labels[tr], ds.labels[te]
    module = pixels_module(ckpt)
    f_tr, f_te = features(module, ds.images[tr]), features(module, ds.images[te])
    assert f_tr.dtype == np.float32 and f_tr.shape == (len(tr), head_of(module).in_features)
    trained = _agreement(f_tr, f_te, y_tr, y_te)
    # the control: the same architecture at its random init, fed the same normalised pixels
    torch.manual_seed(0)
    untrained = models.create(ckpt["model"], num_classes=len(ckpt["classes"]), in_chans=ckpt["channels"],
                              **ckpt["model_kwargs"])
    u_tr, u_te = (features(untrained, ds.images[i], mean=ckpt["mean"], std=ckpt["std"]) for i in (tr, te))
    control = _agreement(u_tr, u_te, y_tr, y_te)
    raw = _agreement(*(ds.images[i].reshape(len(i), -1).astype(np.float32) for i in (tr, te)), y_tr, y_te)  # (N, 64)
    # raw pixels are no control on digits: 8x8 glyphs are already 0.961 by pixel cosine
    print(f"5-NN class agreement on {len(te)} test images: trained {trained:.4f}, untrained {control:.4f}, "
          f"raw pixels {raw:.4f}")
    assert trained >= 0.95
    assert control < 0.95 and trained - control >= 0.02  # measured: 0.961 against 0.934


def test_features_are_the_same_through_pixels_tta_and_the_bare_model(digits):
    ckpt, ds, _, te = digits
    images = ds.images[te[:50]]
    plain = features(pixels_module(ckpt), images, batch=7)  # batches of 7: the last one is short
    assert np.allclose(np.linalg.norm(plain, axis=1), 1, atol=1e-5)
    tta = pixels_module(ckpt, tta="flip+shift")  # the first view is the image as it is
    assert np.allclose(features(tta, images), plain, atol=1e-6)
    bare = models.from_checkpoint(ckpt)
    assert np.allclose(features(bare, images, mean=ckpt["mean"], std=ckpt["std"]), plain, atol=1e-6)
    raw = features(bare, images, mean=ckpt["mean"], std=ckpt["std"], normalize=False)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), plain, atol=1e-5)
    # the hook is gone and the module predicts as before
    module = pixels_module(ckpt)
    before = module(torch.from_numpy(images)).detach()
    features(module, images)
    assert not head_of(module)._forward_pre_hooks and torch.equal(module(torch.from_numpy(images)).detach(), before)


def test_a_model_without_a_head_is_refused_naming_the_fix():
    with pytest.raises(CnnfitError, match=r"no `head` nn.Linear.*self.head = nn.Linear"):
        features(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), np.zeros((1, 4), np.float32))


def test_nearest_equals_a_brute_force_sort_in_any_chunk_size():
    rng = np.random.default_rng(0)
    query, bank = rng.normal(size=(30, 8)), rng.normal(size=(200, 8)) * rng.uniform(0.1, 10, (200, 1))
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    want = np.argsort(-(q @ b.T), axis=1)[:, :5]  # (30, 5): cosine, so the rows' lengths do not matter
    for budget in (1, 200 * 7, 1 << 24):  # one query at a time, 7 at a time, all at once
        ids, sims = nearest(query, bank, 5, budget=budget)
        assert ids.shape == sims.shape == (30, 5) and (ids == want).all()
        assert np.allclose(sims, np.take_along_axis(q @ b.T, want, axis=1), atol=1e-6)
        assert (np.diff(sims, axis=1) <= 0).all()
    ids, sims = nearest(bank[:3], bank, 1)
    assert ids[:, 0].tolist() == [0, 1, 2] and np.allclose(sims, 1, atol=1e-6)
    with pytest.raises(CnnfitError, match="choose k from 1 to 200"):
        nearest(query, bank, 201)
