"""Input-pipeline throughput at the official sizes on fabricated full-size PNGs; prints one JSON line.

GTA5-like 1914x1052 images (+ palette labels) -> 1280x720 with colour jitter, Cityscapes-like
2048x1024 images -> 1024x512, in the FADA adaptation batch (4 source + 4 target); also the source-only
and the self-distillation (scale 0.5-1.5, crop 512x1024, flip) pipelines.

    python benchmarks/input_pipeline.py [--images 12] [--batches 6] [--root /tmp/kf_bench] [--cores 1]

``--cores N`` pins the process to its first N allowed cores (as ``taskset``) before TensorFlow starts, so
``tf.data`` sizes its thread pool to them; ``*_cpu_s_per_image`` is process CPU time (all threads) per
image and ``*_cores_busy`` the CPU seconds per wall second, which shows whether the cores were used.
``*_runnable_threads`` is the mean number of the process's threads running or waiting for a core
(sampled every 5 ms from /proc): the parallelism the pipeline asks for, which a loaded or capped
machine cannot hide (``cores_busy`` then only shows the share it got).
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


class _RunnableThreads:
    """Samples how many of this process's threads (but the sampler) are running or runnable."""

    def __init__(self, period=0.005):
        import threading

        self.samples, self.period, self._stop = [], period, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, own):
        n = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    n += int(tid) != own and f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended
                pass
        return n

    def _run(self):
        import threading

        own = threading.get_native_id()
        while not self._stop.wait(self.period):
            self.samples.append(self._count(own))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mean(self):
        return round(sum(self.samples) / max(len(self.samples), 1), 2)


def _rate(ds, batches: int, per_batch: int) -> dict:
    it = iter(ds)
    for _ in range(2):  # warm-up: tracing, thread pools, autotune
        next(it)
    t, c = time.perf_counter(), time.process_time()
    with _RunnableThreads() as runnable:
        for _ in range(batches):
            b = next(it)
            _ = [np.asarray(v) for v in (b.values() if isinstance(b, dict) else b)]
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = batches * per_batch
    return {
        "images_per_s": round(n / wall, 2),
        "cpu_s_per_image": round(cpu / n, 3),
        "cores_busy": round(cpu / wall, 2),
        "runnable_threads": runnable.mean(),
    }


def _decode_rate(files, graph: bool, n: int = 24) -> dict:
    """Decoding alone: a tf.data map over full-size PNGs, in the graph or through tf.py_function."""
    import tensorflow as tf

    from keras_fada.data import io as dio

    def f(p):
        if graph:
            return tf.reduce_max(dio.decode_image_in_graph(p))
        return tf.reduce_max(tf.py_function(lambda q: dio.read_image(q.numpy().decode()), [p], tf.uint8))

    ds = tf.data.Dataset.from_tensor_slices(files).repeat().map(f, num_parallel_calls=tf.data.AUTOTUNE)
    it = iter(ds.prefetch(4))
    for _ in range(4):
        next(it)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        next(it)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"images_per_s": round(n / wall, 2), "cores_busy": round(cpu / wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/keras_fada_input_bench")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--cores", type=int, default=None, help="pin to the first N allowed cores")
    ap.add_argument(
        "--only", choices=("adaptation", "source_only", "self_distillation", "decode"), default=None
    )
    args = ap.parse_args()
    if args.cores:  # before TensorFlow is imported: its thread pools follow the affinity mask
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])

    t = time.perf_counter()
    _fabricate(args.root, args.images)
    fabricate_s = time.perf_counter() - t
    from keras_fada import data as kd

    src = kd.gta5(os.path.join(args.root, "gta5"))
    tgt = kd.cityscapes(os.path.join(args.root, "cityscapes"), "train")
    bs = args.batch_size
    pipelines = {
        "adaptation": lambda: (kd.make_adaptation_dataset(src, tgt, bs, jitter=True, seed=0), 2 * bs),
        "source_only": lambda: (kd.make_supervised_dataset(src, bs, jitter=False, seed=0), bs),
        "self_distillation": lambda: (kd.make_self_distillation_dataset(tgt, bs, seed=0), bs),
    }
    out = {
        "benchmark": "input_pipeline",
        "cores": len(os.sched_getaffinity(0)),
        "batch_size": bs,
        "adaptation_note": "GTA5 1914x1052 -> 1280x720 + jitter, Cityscapes 2048x1024 -> 1024x512",
        "fabricate_s": round(fabricate_s, 1),
    }
    if args.only in (None, "decode"):  # GTA5-size PNG images: in the graph vs through tf.py_function
        files = sorted(src.list_files()[0])
        out.update({f"decode_graph_{k}": v for k, v in _decode_rate(files, True).items()})
        out.update({f"decode_py_function_{k}": v for k, v in _decode_rate(files, False).items()})
    for name, make in pipelines.items():
        if args.only in (None, name):
            ds, per_batch = make()
            out.update({f"{name}_{k}": v for k, v in _rate(ds, args.batches, per_batch).items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
