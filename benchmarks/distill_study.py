"""What self-distillation gives on the built-in synthetic pair (issue 25): per seed the demo's source-only
and FADA stages are trained once (``<output>/seed<N>/base``, reused with ``--reuse``), the teacher's
pseudo labels on the target *train* images are scored against their true labels (read for this
measurement only: the method never sees them), then each self-distillation variant runs from the same
adapted checkpoint (``distill.teacher=<base>/adapt/segmentor.weights.h5``). One JSON line per seed,
then the summary (mean over seeds).

Pseudo-label figures: ``pl_miou`` / ``pl_acc`` (mIoU and pixel accuracy of the argmax labels, every
pixel labelled, as the official ``test.py --saveres``), ``conf`` (mean max-probability), ``ece`` (15-bin
expected calibration error), ``kept_<t>`` / ``acc_<t>`` (fraction of pixels with confidence >= t and
their accuracy: what a threshold would keep; the official code uses none).

    python benchmarks/distill_study.py                              # 3 seeds, every variant
    python benchmarks/distill_study.py --reuse --variants oracle    # one more variant on the same bases
    python benchmarks/distill_study.py --analyse                    # by-class scores of the finished runs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time

import keras
import numpy as np

from keras_fada import config as C
from keras_fada import data as kd
from keras_fada import evaluation, metrics
from keras_fada.training import build, stages
from keras_fada.training.pseudo_labels import write_pseudo_labels
from keras_fada.training.run_dir import stage_checkpoint, stage_state
from keras_fada.training.stages import run_stages

# name -> (what it is, overrides on top of the demo config). The demo's distill stage (configs/backbones/
# small.yaml): student = the teacher's weights fine-tuned with its BN frozen, lr 2.5e-3, 250 steps, no
# jitter, scale 0.75-1.25. Official (train_self_distill.py): fresh ImageNet student, the source stage's
# schedule, trainable BN (GTA; frozen for SYNTHIA), jitter, scale 0.5-1.5, flip 0.5, argmax labels.
FRESH = ["distill.init=null", "distill.base_lr=1.0e-2", "distill.max_iter=800", "distill.steps=800"]
VARIANTS = {
    "demo": ("the demo's distill stage (BN frozen)", []),
    "demo_bn": ("the demo's, BN trained (official GTA SD)", ["distill.freeze_bn=false"]),
    "official": (
        "official recipe on the small network: fresh student (random init: no ImageNet weights for `small`), "
        "the source stage's schedule (train_src = SD but for the data, issue #13: lr 1e-2, 800 steps), "
        "trainable BN, jitter, scale 0.5-1.5, flip 0.5",
        [*FRESH, "distill.freeze_bn=false", "distill.jitter=true", "distill.scale_range=[0.5,1.5]"],
    ),
    "fresh_noaug": (
        "fresh student, source schedule, trainable BN, the demo's augmentation (no jitter, scale 0.75-1.25)",
        [*FRESH, "distill.freeze_bn=false"],
    ),
    "finetune_aug": (
        "the demo's fine-tuned student, BN trained, with the official augmentation (jitter, scale 0.5-1.5)",
        ["distill.freeze_bn=false", "distill.jitter=true", "distill.scale_range=[0.5,1.5]"],
    ),
    "oracle": (
        "diagnostic, not a method: the demo's student trained on the target train images' true labels",
        [],
    ),
}

THRESHOLDS = (0.5, 0.7, 0.9)


def pseudo_label_quality(cfg, teacher_path, data_root):
    """The teacher's argmax labels on the target train images against their true labels."""
    k = int(cfg["num_classes"])
    size = tuple(cfg["distill"]["teacher_size"])
    specs = kd.synthetic_specs(os.path.join(data_root, "synthetic"), **cfg["data"]["synthetic"])
    spec = specs["target_train"]
    teacher = build.load_segmentor(teacher_path, cfg["backbone"], k)
    ds = kd.make_eval_dataset(spec, int(cfg["eval"]["batch_size"]), size=size)
    conf_m = np.zeros((k, k), np.int64)
    confs, correct = [], []
    for images, labels in ds.as_numpy_iterator():
        labels = labels[..., 0] if labels.ndim == 4 else labels
        probs = evaluation.predict_probabilities(teacher, images, labels.shape[1:3])
        pred = probs.argmax(-1)
        conf_m += metrics.confusion_matrix(labels, pred, k)
        valid = labels != 255
        confs.append(probs.max(-1)[valid])
        correct.append((pred == labels)[valid])
    conf, ok = np.concatenate(confs), np.concatenate(correct)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum(
        abs(conf[bins == b].mean() - ok[bins == b].mean()) * (bins == b).mean()
        for b in range(15)
        if (bins == b).any()
    )
    out = {
        "pl_miou": round(float(metrics.iou_per_class(conf_m).mean() * 100), 2),
        "pl_acc": round(float(ok.mean() * 100), 2),
        "conf": round(float(conf.mean() * 100), 2),
        "ece": round(float(ece * 100), 2),
    }
    for t in THRESHOLDS:
        keep = conf >= t
        out[f"kept_{t}"] = round(float(keep.mean() * 100), 1)
        out[f"acc_{t}"] = round(float(ok[keep].mean() * 100), 2) if keep.any() else None
    # classes the labels never predict (present in the truth) and the share of the truth they hold
    truth, predicted = conf_m.sum(1), conf_m.sum(0)
    out["classes_missing"] = int(((truth > 0) & (predicted == 0)).sum())
    return out


def by_class(cfg, base, names, output, seed, data_root):
    """Target-val pixel accuracy and mIoU of the teacher and each variant's student, split into the
    classes the teacher has learnt (IoU >= 5) and the rest, from the saved checkpoints."""
    k = int(cfg["num_classes"])
    spec = kd.synthetic_specs(os.path.join(data_root, "synthetic"), **cfg["data"]["synthetic"])["target_val"]
    models = {"adapt": stage_checkpoint(base, "adapt")}
    models.update({n: stage_checkpoint(os.path.join(output, f"seed{seed}", n), "distill") for n in names})
    out, learnt = {}, None
    for name, path in models.items():
        if not os.path.isfile(path):
            continue
        conf = evaluation.evaluate_dataset(
            build.load_segmentor(path, cfg["backbone"], k), spec, k, batch_size=8
        )
        iou = metrics.iou_per_class(conf) * 100
        if learnt is None:
            learnt = iou >= 5
        out[name] = {
            "miou": round(float(iou.mean()), 2),
            "pixel_acc": round(float(np.trace(conf) / conf.sum() * 100), 2),
            "miou_learnt": round(float(iou[learnt].mean()), 2),
            "miou_rest": round(float(iou[~learnt].mean()), 2),
            "zero_classes": int((iou < 0.5).sum()),
        }
    out["learnt_classes"] = int(learnt.sum())
    return out


def write_true_labels(teacher, spec, out_dir, size=None, batch_size=1, verbose=True):
    """In place of the teacher's labels (the ``oracle`` diagnostic): the true train ids of ``spec``'s
    images, written as the pseudo-label PNGs would be."""
    from PIL import Image

    from keras_fada.data import io
    from keras_fada.data import labels as L

    os.makedirs(out_dir, exist_ok=True)
    labelled = kd.cityscapes(spec.root, "train", 19)  # the synthetic target tree, with its gtFine
    images, labels = labelled.list_files()
    lut = io.label_lut(labelled)
    for image, label in zip(images, labels, strict=True):
        img = Image.fromarray(io.read_label(label, labelled.label_format, lut).astype(np.uint8), mode="P")
        img.putpalette(L.palette_flat(L.CITYSCAPES_PALETTE))
        img.save(os.path.join(out_dir, os.path.basename(spec.stem(image)) + ".png"))
    return len(images)


def curve(run_dir):
    """The target-val mIoU every ``eval.period`` steps of the distill stage (its history.csv)."""
    path = os.path.join(run_dir, "distill", "history.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [round(float(r["val_miou"]), 2) for r in rows if r.get("val_miou") not in (None, "", "nan")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--data-root", default="/tmp/keras_fada_distill/data")
    ap.add_argument("--output", default="/tmp/keras_fada_distill/runs")
    ap.add_argument("--reuse", action="store_true", help="keep finished source/adapt runs in --output")
    ap.add_argument(
        "--eval-period", type=int, default=50, help="distill steps between target-val evaluations"
    )
    ap.add_argument(
        "--analyse", action="store_true", help="only score the finished runs in --output by class"
    )
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides (every run)")
    args = ap.parse_args()

    if args.analyse:
        for seed in args.seeds:
            cfg = C.load_config(
                "synthetic", "small", overrides=[f"data.root={args.data_root}", *args.overrides]
            )
            base = os.path.join(args.output, f"seed{seed}", "base")
            row = {"seed": seed, **by_class(cfg, base, args.variants, args.output, seed, args.data_root)}
            print(json.dumps(row), flush=True)
        return
    if not args.reuse:
        shutil.rmtree(args.output, ignore_errors=True)
    base_over = [f"data.root={args.data_root}", *args.overrides]
    t_all = time.perf_counter()
    per_seed = []
    quiet = lambda *_: None  # noqa: E731
    for seed in args.seeds:
        base = os.path.join(args.output, f"seed{seed}", "base")
        cfg = C.load_config("synthetic", "small", overrides=[*base_over, f"seed={seed}"])
        t = time.perf_counter()
        summary = run_stages(cfg, ["source", "adapt"], base, resume=True, verbose=0, report=quiet)
        row = {
            "seed": seed,
            "source": summary["stages"]["source"]["miou"],
            "adapt": summary["stages"]["adapt"]["miou"],
            "base_s": round(time.perf_counter() - t, 1),
        }
        teacher = stage_checkpoint(base, "adapt")
        row["pseudo_labels"] = pseudo_label_quality(cfg, teacher, args.data_root)
        for name in args.variants:
            vdir = os.path.join(args.output, f"seed{seed}", name)
            shutil.rmtree(vdir, ignore_errors=True)
            over = [
                *base_over,
                f"seed={seed}",
                f"distill.teacher={teacher}",
                f"eval.period={args.eval_period}",
            ]
            # one epoch per evaluation: the callback evaluates at epoch ends
            period = f"distill.checkpoint_period={args.eval_period}"
            vcfg = C.load_config("synthetic", "small", overrides=[*over, *VARIANTS[name][1], period])
            t = time.perf_counter()
            stages.write_pseudo_labels = write_true_labels if name == "oracle" else write_pseudo_labels
            run_stages(vcfg, ["distill"], vdir, verbose=0, report=quiet)
            state = stage_state(vdir, "distill")
            row[name] = {"miou": state["miou"], "curve": curve(vdir), "s": round(time.perf_counter() - t, 1)}
        per_seed.append(row)
        print(json.dumps(row), flush=True)

    summary = {"benchmark": "distill_study", "backend": keras.backend.backend(), "seeds": args.seeds}
    for key in ("source", "adapt"):
        summary[key] = round(float(np.mean([r[key] for r in per_seed])), 2)
    for name in args.variants:
        m = [r[name]["miou"] for r in per_seed]
        gains = [r[name]["miou"] - r["adapt"] for r in per_seed]
        summary[name] = {"miou_mean": round(float(np.mean(m)), 2), "gain_mean": round(float(np.mean(gains)), 2),
                         "gains": [round(g, 2) for g in gains]}  # fmt: skip
    for key in per_seed[0]["pseudo_labels"]:
        vals = [r["pseudo_labels"][key] for r in per_seed if r["pseudo_labels"][key] is not None]
        summary.setdefault("pseudo_labels", {})[key] = round(float(np.mean(vals)), 2) if vals else None
    summary["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
