"""The Keras 3 / TensorFlow baseline for bench_tta.py, written the way the Keras tutorials train: a tf.data pipeline
from numpy arrays (cache, shuffle, batch, augmentation mapped on batches with RandomFlip / RandomTranslation
layers, prefetch), the model in keras.layers, AdamW with a one-cycle LearningRateSchedule, label-smoothed
CategoricalCrossentropy, model.fit, then model.evaluate on the test set (test-time views averaged when the
recipe asks for them). One JSON line on stdout at the end: {"accuracy", "import", "data", "train", "eval",
"epoch_seconds", ...} (seconds).

The model mirrors cnnfit's (src/cnnfit/models/small.py): fastnet's conv-BN-GELU groups, pools, global max pool
and linear head, or simplecnn's two convs and dense layers, with the same channel widths; BN epsilon and
momentum and the exact GELU as PyTorch's; weight init stays Keras' own. Runs in benchmarks/.venv-keras (made
by bench_tta.py), never imports torch or cnnfit:

    benchmarks/.venv-keras/bin/python benchmarks/tta_keras.py --spec '{"data": "fashion-mnist", ...}' [--threads N]
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # import phase: everything below up to IMPORT_SECONDS

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no oneDNN / CPU-feature banners on stderr
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402
import idx_data  # noqa: E402  (plain numpy: runs in the Keras venv too)

IMPORT_SECONDS = time.perf_counter() - _T0
SIDE = 28  # px
CLASSES = 10
BN = {"epsilon": 1e-5, "momentum": 0.9}  # PyTorch's BatchNorm2d defaults (eps 1e-5, running-stat momentum 0.1)
EVAL_BATCH = 1000  # images per forward pass at test time


# ---------------------------------------------------------------- data

def load_split(data: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28, 1) uint8, channels last, labels (N,) int32) of the official train or t10k files."""
    images, labels = idx_data.load_split(data, split)
    return images[..., None], labels.astype(np.int32)


def load_data(spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Train (a seeded random share with --fraction) and test arrays, and the train mean and std in [0, 1] units."""
    x, y = load_split(spec["data"], "train")
    if spec["fraction"] < 1:
        keep = np.random.default_rng(spec["seed"]).permutation(len(y))[: max(1, round(len(y) * spec["fraction"]))]
        x, y = x[np.sort(keep)], y[np.sort(keep)]
    xt, yt = load_split(spec["data"], "t10k")
    scaled = x.astype(np.float32) / 255
    return x, y, xt, yt, float(scaled.mean()), float(scaled.std())


def train_pipeline(x: np.ndarray, y: np.ndarray, spec: dict, mean: float, std: float) -> tf.data.Dataset:
    """cache -> shuffle -> batch -> augment the batch -> normalize -> prefetch, as the Keras guides build it."""
    augment = augmentation(spec)

    def prepare(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32) / 255.0  # (B, 28, 28, 1) in [0, 1]
        if augment is not None:
            images = augment(images, training=True)
        return (images - mean) / std, tf.one_hot(labels, CLASSES)

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    ds = ds.shuffle(len(y), seed=spec["seed"], reshuffle_each_iteration=True).batch(spec["batch"])
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def augmentation(spec: dict) -> keras.Sequential | None:
    """Keras' preprocessing layers: flip, whole-pixel shift with zero fill (nearest, the recipe's pixel range),
    random erasing."""
    chain = []
    if spec["hflip"]:
        chain.append(layers.RandomFlip("horizontal", seed=spec["seed"]))
    pad = round(spec["shift"] * SIDE)  # px
    if pad:
        chain.append(layers.RandomTranslation(pad / SIDE, pad / SIDE, fill_mode="constant", interpolation="nearest",
                                              fill_value=0.0, seed=spec["seed"]))
    if spec["erasing"]:
        # Keras' own layer: probability exactly p with factor=(p, p); box sides sqrt(U(0.02, 0.33)) of each side
        # (cnnfit: area 2-33%, log-uniform aspect), filled with normal noise (cnnfit: uniform)
        chain.append(layers.RandomErasing(factor=(spec["erasing"], spec["erasing"]), scale=(0.02, 0.33),
                                          value_range=(0, 1), seed=spec["seed"]))
    return keras.Sequential(chain) if chain else None


# ---------------------------------------------------------------- the model, mirroring cnnfit's

def width_of(channels: int, width: float | None, divisor: int = 8) -> int:
    """cnnfit's channel rule: scale, round to a multiple of 8."""
    if not width or width == 1.0:
        return channels
    return max(divisor, int(channels * width + divisor / 2) // divisor * divisor)


def gelu(x: tf.Tensor) -> tf.Tensor:
    return keras.activations.gelu(x, approximate=False)  # exact erf form, as torch.nn.GELU()


def conv_bn_act(x: tf.Tensor, channels: int, pool: bool) -> tf.Tensor:
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)  # bias is cancelled by the BN after it
    if pool:
        x = layers.MaxPooling2D(2)(x)
    x = layers.BatchNormalization(**BN)(x)
    return layers.Activation(gelu)(x)


def conv_group(x: tf.Tensor, channels: int, pool: bool = True) -> tf.Tensor:
    """cnnfit's ConvGroup (airbench94): conv, pool, BN, GELU, conv, BN, GELU."""
    x = conv_bn_act(x, channels, pool)
    return conv_bn_act(x, channels, False)


def fastnet(width: float | None, crop: int | None = None, blocks: int | None = None) -> keras.Model:
    """[crop] - stem (conv32, pool, BN, GELU) - group64 - group256 - [group256 (no pool)] - global max pool - head;
    blocks=2 leaves out the last group, as cnnfit's fastnet does."""
    c0, c1, c2, c3 = (width_of(c, width) for c in (32, 64, 256, 256))
    inputs = keras.Input((SIDE, SIDE, 1))
    x = layers.Cropping2D(crop)(inputs) if crop else inputs  # (28 - 2 crop, 28 - 2 crop, 1)
    x = conv_bn_act(x, c0, pool=True)  # (14, 14, c0) at 28 px
    x = conv_group(x, c1)  # (7, 7, c1)
    x = conv_group(x, c2)  # (3, 3, c2)
    if blocks != 2:
        x = conv_group(x, c3, pool=False)  # (3, 3, c3)
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, layers.Dense(CLASSES)(x), name="fastnet")


def simplecnn(width: float | None) -> keras.Model:
    """The Keras MNIST example's CNN: conv32 - conv64 - maxpool - dropout 0.25 - dense512 - dropout 0.5 - head."""
    inputs = keras.Input((SIDE, SIDE, 1))
    x = layers.Conv2D(width_of(32, width), 3, activation="relu")(inputs)  # (26, 26, 32)
    x = layers.Conv2D(width_of(64, width), 3, activation="relu")(x)  # (24, 24, 64)
    x = layers.Dropout(0.25)(layers.MaxPooling2D(2)(x))  # (12, 12, 64)
    x = layers.Dense(width_of(512, width), activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(CLASSES)(layers.Dropout(0.5)(x)), name="simplecnn")


MODELS = {"fastnet": fastnet, "simplecnn": simplecnn}


@keras.saving.register_keras_serializable()
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """cnnfit's one-cycle: linear rise from peak/25 over 30% of the steps, then cosine down to peak * 1e-4."""

    def __init__(self, peak: float, total: int, rise: float = 0.3, start: float = 0.04, end: float = 1e-4) -> None:
        self.peak, self.total, self.rise, self.start, self.end = peak, total, rise, start, end

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = ops.cast(step, "float32")
        top = max(int(self.rise * self.total), 1)  # steps
        up = self.start + (1 - self.start) * step / top
        t = ops.minimum((step - top) / max(self.total - top, 1), 1.0)
        down = self.end + (1 - self.end) * 0.5 * (1 + ops.cos(math.pi * t))
        return self.peak * ops.where(step < top, up, down)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total": self.total, "rise": self.rise, "start": self.start, "end": self.end}


def compiled_model(spec: dict, steps: int) -> keras.Model:
    if spec["model"] not in MODELS:
        raise SystemExit(f"tta_keras.py mirrors {', '.join(MODELS)}, not {spec['model']}")
    model = MODELS[spec["model"]](spec["width"], **{k: spec[k] for k in ("crop", "blocks") if spec.get(k)})
    opt = keras.optimizers.AdamW(learning_rate=OneCycle(spec["lr"], steps), weight_decay=spec["weight_decay"],
                                 use_ema=bool(spec["ema"]), ema_momentum=spec["ema"] or 0.99)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # no decay on biases and BN, as cnnfit
    model.compile(optimizer=opt, metrics=["accuracy"],
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=spec["label_smoothing"]))
    return model


# ---------------------------------------------------------------- evaluation

def shifted(x: np.ndarray, d: int) -> np.ndarray:
    """(N, H, W, C) translated by d px down and right (negative: up and left), edges repeated (cnnfit's TTA)."""
    padded = np.pad(x, ((0, 0), (abs(d), abs(d)), (abs(d), abs(d)), (0, 0)), mode="edge")
    start = abs(d) - d
    return padded[:, start:start + SIDE, start:start + SIDE]


def test_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, mode: str) -> float:
    """model.evaluate on the test set; with test-time views, the mean softmax over them (flip, flip+shift)."""
    if mode == "none":
        return float(model.evaluate(x, keras.utils.to_categorical(y, CLASSES), batch_size=EVAL_BATCH, verbose=0)[1])
    views = [x, x[:, :, ::-1]]
    if mode == "flip+shift":
        s = max(1, round(SIDE / 16))  # 2 px
        views += [shifted(v, d) for v in views[:2] for d in (s, -s)]
    probs = np.mean([ops.convert_to_numpy(ops.softmax(model.predict(v, batch_size=EVAL_BATCH, verbose=0)))
                     for v in views], axis=0)
    return float((probs.argmax(1) == y).mean())


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch of model.fit."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.t0)


def set_threads(n: int | None) -> None:
    if n:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="the recipe's settings as JSON (bench_tta.py writes it)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    spec = json.loads(args.spec)
    set_threads(args.threads)
    keras.utils.set_random_seed(spec["seed"])
    start = time.perf_counter()
    x, y, xt, yt, mean, std = load_data(spec)
    ds = train_pipeline(x, y, spec, mean, std)
    if args.threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = args.threads
        ds = ds.with_options(options)
    model = compiled_model(spec, spec["epochs"] * math.ceil(len(y) / spec["batch"]))
    data_s = time.perf_counter() - start
    timer = EpochTimer()
    t0 = time.perf_counter()
    model.fit(ds, epochs=spec["epochs"], verbose=0, callbacks=[timer])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    accuracy = test_accuracy(model, (xt.astype(np.float32) / 255 - mean) / std, yt, spec["tta"])
    print(json.dumps({"way": "keras", "accuracy": accuracy, "import": IMPORT_SECONDS, "data": data_s, "train": train_s,
                      "eval": time.perf_counter() - t0, "epoch_seconds": timer.seconds, "train_images": len(y),
                      "threads": args.threads, "tensorflow": tf.__version__, "keras": keras.__version__}))


if __name__ == "__main__":
    main()
