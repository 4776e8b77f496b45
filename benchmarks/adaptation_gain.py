"""Adaptation gain on the built-in synthetic pair (issue 7): target mIoU and CCD per arm over seeds.

For each seed one source-only model is trained (``keras_fada.training.stages.run_stages``, stage ``source``,
the demo's ``configs/synthetic`` settings); from that same checkpoint every arm then runs:

``source_only``
    the source-only checkpoint itself (no extra steps).
``continued``
    continued source-only: the adaptation stage with ``lambda_adv=0`` (same optimiser, learning rate,
    steps, source batches and frozen BatchNorm as the adversarial arms; D trains but never reaches F).
``adabn``
    the source-only model with its BatchNorm moving statistics re-estimated on the target training
    images (cumulative average over one pass, training-mode forward), weights untouched, no
    adversarial loss. The demo's small network trains its BatchNorm in the source stage
    (``source.freeze_bn: false``), so these are ordinary BatchNorm statistics, not FrozenBN
    constants.
``binary`` / ``hard`` / ``soft``
    the adaptation stage with ``DomainEncoder("binary")`` (1+1-channel discriminator: the global
    baseline), ``"hard"`` and ``"soft"`` (FADA); BatchNorm frozen (``adapt.freeze_bn: true``).

Every arm is scored on target val (mIoU, 19 classes) and by mean CCD (Eq. 9,
``keras_fada.evaluation.class_center_distance`` on labelled source val + target val). One JSON line
per (arm, seed), then one summary line (mean, std over seeds).

    python benchmarks/adaptation_gain.py                       # 3 seeds, the demo's schedule
    python benchmarks/adaptation_gain.py --source-steps 600 --adapt-steps 300 lambda_adv=0.01
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import keras
import numpy as np

from keras_fada import config as C
from keras_fada import data as kd
from keras_fada import evaluation
from keras_fada.models.deeplabv2 import batch_norm_layers
from keras_fada.training import build, tasks
from keras_fada.training.run_dir import stage_checkpoint
from keras_fada.training.stages import run_stages

ARMS = ("source_only", "continued", "adabn", "binary", "hard", "soft")
ADVERSARIAL = {"continued": "soft", "binary": "binary", "hard": "hard", "soft": "soft"}


def reestimate_batch_norm(segmentor, spec, batch_size=8):
    """AdaBN: replaces every BatchNorm's moving mean/variance by their average over ``spec``'s
    images (training-mode forward passes with momentum (n-1)/n, i.e. a cumulative mean)."""
    bns = batch_norm_layers(segmentor)
    if not bns:
        raise ValueError("the segmentor has no trainable-kind BatchNormalization to re-estimate")
    momenta = [bn.momentum for bn in bns]
    ds = kd.make_inference_dataset(spec, batch_size, size="eval")
    for n, (images, _) in enumerate(ds.as_numpy_iterator(), start=1):
        for bn in bns:
            bn.momentum = (n - 1) / n
        segmentor(images, training=True)
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    return len(bns)


def scores(segmentor, specs, num_classes, size):
    conf = evaluation.evaluate_dataset(segmentor, specs["target_val"], num_classes, size=size, batch_size=8)
    miou = tasks.reported_scores("synthetic", conf)["miou"]
    sets = [kd.make_eval_dataset(specs[k], 8, size=tuple(size)) for k in ("source_val", "target_val")]
    ccd = evaluation.class_center_distance(segmentor, sets, num_classes)
    return {"miou": miou, "ccd": round(float(np.nanmean(ccd)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source-steps", type=int, default=None, help="default: the demo's source.steps")
    ap.add_argument("--adapt-steps", type=int, default=None, help="default: the demo's adapt.steps")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--data-root", default="/tmp/keras_fada_gain/data")
    ap.add_argument("--output", default="/tmp/keras_fada_gain/runs", help="replaced if it exists")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, e.g. lambda_adv=0.01")
    args = ap.parse_args()

    overrides = [f"data.root={args.data_root}", *args.overrides]
    if args.source_steps:
        overrides += [f"source.steps={args.source_steps}", f"source.max_iter={args.source_steps}"]
    if args.adapt_steps:
        overrides += [f"adapt.steps={args.adapt_steps}", f"adapt.max_iter={args.adapt_steps}"]
    base = C.load_config("synthetic", "small", overrides=overrides)
    k, size = int(base["num_classes"]), tuple(base["adapt"]["eval_size"])
    specs = tasks.task_specs(base)
    specs["source_val"] = kd.synthetic_specs(
        os.path.join(base["data"]["root"], "synthetic"), **base["data"]["synthetic"]
    )["source_val"]
    shutil.rmtree(args.output, ignore_errors=True)
    t_all = time.perf_counter()
    rows = []
    quiet = {"verbose": 0, "report": lambda *_: None}
    for seed in args.seeds:
        seed_dir = os.path.join(args.output, f"seed{seed}")
        cfg = C.load_config("synthetic", "small", overrides=[*overrides, f"seed={seed}"])
        keras.utils.set_random_seed(seed)
        t = time.perf_counter()
        run_stages(cfg, ["source"], seed_dir, **quiet)
        source_ckpt = stage_checkpoint(seed_dir, "source")
        source_s = time.perf_counter() - t
        for arm in args.arms:
            t = time.perf_counter()
            if arm in ADVERSARIAL:
                arm_cfg = C.load_config(
                    "synthetic", "small", overrides=[*overrides, f"seed={seed}", f"adapt.init={source_ckpt}", f"encoder.mode={ADVERSARIAL[arm]}"]
                    + (["lambda_adv=0"] if arm == "continued" else []),
                )  # fmt: skip
                arm_dir = os.path.join(seed_dir, arm)
                keras.utils.set_random_seed(seed)
                run_stages(arm_cfg, ["adapt"], arm_dir, **quiet)
                segmentor = build.load_segmentor(stage_checkpoint(arm_dir, "adapt"), "small", k)
                steps = int(arm_cfg["adapt"]["steps"])
            else:
                segmentor = build.load_segmentor(source_ckpt, "small", k)
                steps = 0
                if arm == "adabn":
                    reestimate_batch_norm(segmentor, specs["target_train"])
            row = {
                "arm": arm,
                "seed": seed,
                **scores(segmentor, specs, k, size),
                "extra_steps": steps,
                "lambda_adv": 0.0 if arm == "continued" else float(base["lambda_adv"]),
                "arm_s": round(time.perf_counter() - t, 1),
                "source_s": round(source_s, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    summary = {"benchmark": "adaptation_gain", "backend": keras.backend.backend(), "arms": {}}
    for arm in args.arms:
        m = np.array([r["miou"] for r in rows if r["arm"] == arm])
        c = np.array([r["ccd"] for r in rows if r["arm"] == arm])
        summary["arms"][arm] = {
            "miou_mean": round(float(m.mean()), 2),
            "miou_std": round(float(m.std(ddof=1)) if len(m) > 1 else 0.0, 2),
            "miou_per_seed": m.tolist(),
            "ccd_mean": round(float(c.mean()), 4),
        }
    summary.update(
        seeds=args.seeds,
        source_steps=int(base["source"]["steps"]),
        adapt_steps=int(base["adapt"]["steps"]),
        adapt_batch=int(base["adapt"]["batch_size"]),
        lambda_adv=float(base["lambda_adv"]),
        total_s=round(time.perf_counter() - t_all, 1),
    )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
