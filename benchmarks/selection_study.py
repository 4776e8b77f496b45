"""Label-free checkpoint selection on the built-in synthetic pair (issue 25): per seed a source-only
model and a FADA adaptation stage with a snapshot every ``--period`` steps (the demo's small network
and schedule), every snapshot scored by ``keras_fada.selection.select_run`` on 64 unlabelled target
train images (the discriminator score: the D saved with each snapshot) and by target-val mIoU (the
oracle). One JSON line per seed, then the summary: per score Kendall's tau with mIoU and the selection
gap (mean over seeds), and the mIoU of last / each score / oracle.

    python benchmarks/selection_study.py                      # 3 seeds, 400 adapt steps, period 50
    python benchmarks/selection_study.py --seeds 0 --adapt-steps 200
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
from keras_fada import selection
from keras_fada.training.stages import run_stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source-steps", type=int, default=None, help="default: the demo's source.steps")
    ap.add_argument("--adapt-steps", type=int, default=None, help="default: the demo's adapt.steps")
    ap.add_argument("--period", type=int, default=50, help="adaptation steps between snapshots")
    ap.add_argument("--images", type=int, default=64, help="unlabelled target images scored")
    ap.add_argument("--data-root", default="/tmp/keras_fada_selection/data")
    ap.add_argument("--output", default="/tmp/keras_fada_selection/runs", help="replaced if it exists")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = ap.parse_args()

    overrides = [
        f"data.root={args.data_root}", f"adapt.checkpoint_period={args.period}", "keep_snapshots=-1",
        *args.overrides,
    ]  # fmt: skip
    if args.source_steps:
        overrides += [f"source.steps={args.source_steps}", f"source.max_iter={args.source_steps}"]
    if args.adapt_steps:
        overrides += [f"adapt.steps={args.adapt_steps}", f"adapt.max_iter={args.adapt_steps}"]
    shutil.rmtree(args.output, ignore_errors=True)
    t_all = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        run_dir = os.path.join(args.output, f"seed{seed}")
        cfg = C.load_config("synthetic", "small", overrides=[*overrides, f"seed={seed}"])
        keras.utils.set_random_seed(seed)
        t = time.perf_counter()
        run_stages(cfg, ["source", "adapt"], run_dir, verbose=0, report=lambda *_: None)
        train_s = time.perf_counter() - t
        result = selection.select_run(cfg, run_dir, "adapt", images=args.images, report=lambda *_: None)
        row = {
            "seed": seed,
            "steps": [r["step"] for r in result["rows"]],
            "miou": [round(r["miou"], 2) for r in result["rows"]],
            "discriminator": [round(r["discriminator"], 4) for r in result["rows"]],
            "agreement": result["agreement"],
            "train_s": round(train_s, 1),
            "select_s": round(time.perf_counter() - t - train_s, 1),
        }
        per_seed.append(row)
        print(json.dumps(row), flush=True)

    names = ("last", *selection.SCORES, "oracle")
    summary = {"benchmark": "selection_study", "backend": keras.backend.backend(), "seeds": args.seeds,
               "period": args.period, "images": args.images, "scores": {}}  # fmt: skip
    for n in names:
        a = [r["agreement"][n] for r in per_seed]
        taus = [x["tau"] for x in a if x.get("tau") is not None and x["tau"] == x["tau"]]
        summary["scores"][n] = {
            "tau_mean": round(float(np.mean(taus)), 3) if taus else None,
            "gap_mean": round(float(np.mean([x["gap"] for x in a])), 2),
            "miou_mean": round(float(np.mean([x["miou"] for x in a])), 2),
            "miou": [round(x["miou"], 2) for x in a],
        }
    summary["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
