"""Inference speed of the segmentor and of its exports: one JSON line.

Each runtime runs in its own process (so its peak RSS is its own): the in-framework segmentor
(upsampled as in evaluation) on the current Keras backend, the SavedModel (``tf.saved_model.load``)
and the ONNX file (ONNX Runtime), each exported by ``keras_fada.export`` on the current backend
where it supports the format.

    python benchmarks/inference.py                       # small network, 1024x2048, batch 1
    python benchmarks/inference.py --backbone resnet101 --repeats 2
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _run(kind, path, size, repeats):
    x = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    if kind == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        fn = lambda: loaded.serve(x).numpy()  # noqa: E731
    elif kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path)
        name = session.get_inputs()[0].name
        fn = lambda: session.run(None, {name: x})[0]  # noqa: E731
    else:
        import keras

        import keras_fada.export  # noqa: F401 - registers ServingSegmentor

        model = keras.saving.load_model(path)
        fn = lambda: keras.ops.convert_to_numpy(model(x))  # noqa: E731
    out = fn()  # warm-up (graph building, allocation)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    seconds = (time.perf_counter() - t0) / repeats
    assert out.shape == (1, *size, out.shape[-1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images_per_s": round(1.0 / seconds, 3), "peak_rss_mib": round(peak)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", choices=["small", "resnet101"], default="small")
    p.add_argument("--size", default="1024x2048")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.child:
        print(json.dumps(_run(args.child[0], args.child[1], size, args.repeats)))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_fada.export import UNSUPPORTED, export_segmentor
    from keras_fada.training.build import build_segmentor

    keras.utils.set_random_seed(0)
    segmentor = build_segmentor(args.backbone, 19)
    result = {"backbone": args.backbone, "size": list(size), "batch": 1, "backend": keras.backend.backend()}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"keras": export_segmentor(segmentor, os.path.join(tmp, "k"), "keras")}
        env = dict(os.environ)
        for fmt in ("saved_model", "onnx"):
            if (keras.backend.backend(), fmt) not in UNSUPPORTED:
                paths[fmt] = export_segmentor(segmentor, os.path.join(tmp, fmt), fmt)
        for kind, path in paths.items():
            cmd = [sys.executable, __file__, "--child", kind, path, "--size", args.size]
            cmd += ["--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            name = f"in_framework_{keras.backend.backend()}" if kind == "keras" else kind
            result[name] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
