"""Input-pipeline throughput at the official sizes on fabricated full-size PNGs; prints one JSON line.

GTA5-like 1914x1052 images (+ palette labels) -> 1280x720 with colour jitter, Cityscapes-like
2048x1024 images -> 1024x512, in the FADA adaptation batch (4 source + 4 target); also the source-only
and the self-distillation (scale 0.5-1.5, crop 512x1024, flip) pipelines.

    python benchmarks/input_pipeline.py [--images 12] [--batches 6] [--root /tmp/kf_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from PIL import Image


def _fabricate(root: str, n: int) -> None:
    from keras_fada.data import labels as L
    from keras_fada.data import synthetic

    marker = os.path.join(root, f"done_{n}")
    if os.path.exists(marker):
        return
    for i in range(n):
        # a full-size street scene with texture and noise compresses like a photo, not like flat colour
        img, lab = synthetic.generate_sample(i, 1052, 1914, "target")
        os.makedirs(os.path.join(root, "gta5", "images"), exist_ok=True)
        os.makedirs(os.path.join(root, "gta5", "labels"), exist_ok=True)
        Image.fromarray(img).save(os.path.join(root, "gta5", "images", f"{i + 1:05d}.png"))
        p = Image.fromarray(synthetic._to_label_ids(lab), mode="P")
        p.putpalette(L.palette_flat(L.CITYSCAPES_LABEL_ID_PALETTE))
        p.save(os.path.join(root, "gta5", "labels", f"{i + 1:05d}.png"))
        img, lab = synthetic.generate_sample(1000 + i, 1024, 2048, "target")
        for sub in ("leftImg8bit", "gtFine"):
            os.makedirs(os.path.join(root, "cityscapes", sub, "train", "benchcity"), exist_ok=True)
        stem = f"benchcity_{i:06d}_000019"
        Image.fromarray(img).save(
            os.path.join(root, "cityscapes", "leftImg8bit", "train", "benchcity", f"{stem}_leftImg8bit.png")
        )
        Image.fromarray(synthetic._to_label_ids(lab), mode="L").save(
            os.path.join(root, "cityscapes", "gtFine", "train", "benchcity", f"{stem}_gtFine_labelIds.png")
        )
    open(marker, "w").close()


def _rate(ds, batches: int, per_batch: int) -> float:
    it = iter(ds)
    for _ in range(2):  # warm-up: tracing, thread pools, autotune
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        _ = [np.asarray(v) for v in (b.values() if isinstance(b, dict) else b)]
    return batches * per_batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/keras_fada_input_bench")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()

    t = time.perf_counter()
    _fabricate(args.root, args.images)
    fabricate_s = time.perf_counter() - t
    from keras_fada import data as kd

    src = kd.gta5(os.path.join(args.root, "gta5"))
    tgt = kd.cityscapes(os.path.join(args.root, "cityscapes"), "train")
    bs = args.batch_size
    adapt = kd.make_adaptation_dataset(src, tgt, bs, jitter=True, seed=0)
    source_only = kd.make_supervised_dataset(src, bs, jitter=False, seed=0)
    sd = kd.make_self_distillation_dataset(tgt, bs, seed=0)
    out = {
        "benchmark": "input_pipeline",
        "cpu_count": os.cpu_count(),
        "batch_size": bs,
        "adaptation_images_per_s": round(_rate(adapt, args.batches, 2 * bs), 2),
        "adaptation_note": "GTA5 1914x1052 -> 1280x720 + jitter, Cityscapes 2048x1024 -> 1024x512",
        "source_only_images_per_s": round(_rate(source_only, args.batches, bs), 2),
        "self_distillation_images_per_s": round(_rate(sd, args.batches, bs), 2),
        "fabricate_s": round(fabricate_s, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
