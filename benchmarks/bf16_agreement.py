"""mixed_bfloat16 against float32 over 50 FADA steps: the same initial weights, the same batches.

The synthetic demo's adaptation stage (small network, 4+4 images, λ_adv = 0.1, the demo's
optimisers) runs twice from one source-only checkpoint, once per precision, on the same 50 batches.
Prints one JSON line: per loss, the median and max relative difference over the steps, and the
relative difference of the final feature-extractor weights.

    python benchmarks/bf16_agreement.py                       # trains the source checkpoint first if needed
    python benchmarks/bf16_agreement.py --init runs/synthetic-small/source/segmentor.weights.h5
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_fada import config as C
from keras_fada import data as kd
from keras_fada.models.deeplabv2 import freeze_batch_norm
from keras_fada.training import build, tasks
from keras_fada.training.run_dir import stage_checkpoint
from keras_fada.training.stages import run_stages

LOSSES = ("seg_loss", "adv_loss", "d_loss")


def adapt_model(cfg, init, k, discriminator_weights=None):
    segmentor = build.load_segmentor(init, "small", k)
    freeze_batch_norm(segmentor)
    model = build.fada_model(cfg, segmentor)
    if discriminator_weights is not None:
        model.discriminator.set_weights(discriminator_weights)
    model.compile(**build.stage_optimizers(cfg, "adapt"))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--init", default=None, help="source-only checkpoint of the synthetic demo")
    ap.add_argument("--work", default="/tmp/keras_fada_bf16")
    args = ap.parse_args()

    cfg = C.load_config("synthetic", "small", overrides=[f"data.root={args.work}/data"])
    k = int(cfg["num_classes"])
    init = args.init
    if init is None:
        run_dir = os.path.join(args.work, "run")
        init = stage_checkpoint(run_dir, "source")
        if not os.path.isfile(init):
            run_stages(cfg, ["source"], run_dir, verbose=0, report=lambda *_: None)
    specs = tasks.task_specs(cfg)
    half = int(cfg["adapt"]["batch_size"]) // 2
    ds = kd.make_adaptation_dataset(specs["source_train"], specs["target_train"], half, seed=0)
    batches = list(ds.take(args.steps).as_numpy_iterator())

    keras.utils.set_random_seed(0)
    d_init = None
    history, weights, seconds = {}, {}, {}
    for precision in ("float32", "mixed_bfloat16"):
        keras.config.set_dtype_policy(precision)
        model = adapt_model(cfg, init, k, d_init)
        d_init = d_init or model.discriminator.get_weights()
        rows = []
        t = time.perf_counter()
        for b in batches:
            logs = model.train_on_batch(b, return_dict=True)
            rows.append([float(logs[name]) for name in LOSSES])
        seconds[precision] = round(time.perf_counter() - t, 1)
        history[precision] = np.array(rows)
        weights[precision] = np.concatenate(
            [np.ravel(w) for w in model.segmentor.feature_extractor.get_weights()]
        )
    keras.config.set_dtype_policy("float32")

    f32, bf16 = history["float32"], history["mixed_bfloat16"]
    rel = np.abs(bf16 - f32) / np.maximum(np.abs(f32), 1e-8)
    out = {
        "benchmark": "bf16_agreement",
        "backend": keras.backend.backend(),
        "steps": args.steps,
        "relative_difference": {
            name: {"median": round(float(np.median(rel[:, i])), 5), "max": round(float(rel[:, i].max()), 5)}
            for i, name in enumerate(LOSSES)
        },
        "final_losses": {
            p: dict(zip(LOSSES, np.round(h[-1], 5).tolist(), strict=True)) for p, h in history.items()
        },
        "feature_extractor_weights_rel_l2": round(
            float(
                np.linalg.norm(weights["mixed_bfloat16"] - weights["float32"])
                / np.linalg.norm(weights["float32"])
            ),
            6,
        ),
        "seconds": seconds,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
