"""How much the synthetic domain shift hurts a source-only model; prints one JSON line.

Trains a small dilated CNN on the synthetic source (GTA5 layout) and reports mIoU (19 classes, classes
absent from both prediction and ground truth skipped) on source val and on target val.

    python benchmarks/synthetic_shift.py [--root /tmp/keras_fada_synth] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

from keras_fada import data as kd


def _model(num_classes: int = 19) -> keras.Model:
    x = inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    for filters, rate in ((32, 1), (48, 2), (64, 4), (64, 8), (64, 1)):
        x = keras.layers.Conv2D(filters, 3, padding="same", dilation_rate=rate)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inp, keras.layers.Conv2D(num_classes, 1)(x))


def miou(model, spec, num_classes: int = 19) -> float:
    conf = np.zeros((num_classes, num_classes), np.int64)
    for x, y in kd.make_eval_dataset(spec, 8).as_numpy_iterator():
        pred = np.argmax(model.predict_on_batch(x), -1)
        ok = y != 255
        conf += np.bincount(y[ok] * num_classes + pred[ok], minlength=num_classes**2).reshape(conf.shape)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/keras_fada_synth")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    specs = kd.synthetic_specs(args.root)
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
    )
    ds = kd.make_supervised_dataset(specs["source_train"], 8, flip_prob=0.5, seed=0)
    t = time.perf_counter()
    model.fit(ds, steps_per_epoch=60, epochs=args.epochs, verbose=0)
    out = {
        "benchmark": "synthetic_shift",
        "backend": keras.backend.backend(),
        "train_s": round(time.perf_counter() - t, 1),
        "source_only_miou_source_val": round(miou(model, specs["source_val"]), 4),
        "source_only_miou_target_val": round(miou(model, specs["target_val"]), 4),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
