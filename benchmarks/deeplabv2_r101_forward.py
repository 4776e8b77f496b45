"""Forward-pass time of the full DeepLabV2-R101 (frozen BN) on one 512x1024 RGB image, TensorFlow backend.

Run: KERAS_BACKEND=tensorflow python benchmarks/deeplabv2_r101_forward.py
Prints per-iteration (wall s, own CPU s, foreign CPU s); an iteration is "quiet" when other processes used
< 5% of its wall time (the host may be shared). Frozen-BN gammas are set to 0.5 so activations stay finite
(values only; the work is the same).
"""

import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

from keras_fada.models import deeplabv2_resnet101
from keras_fada.models.deeplabv2 import FrozenBatchNormalization
from keras_fada.ops import resize_bilinear

CLK = os.sysconf("SC_CLK_TCK")


def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK


def own():
    t = os.times()
    return t.user + t.system


g = deeplabv2_resnet101(19)
for layer in g.feature_extractor.layers:
    if isinstance(layer, FrozenBatchNormalization):
        layer.gamma.assign(np.full(layer.gamma.shape, 0.5, "float32"))
x = np.random.default_rng(0).uniform(0, 255, size=(1, 512, 1024, 3)).astype("float32")
logits_fn = tf.function(lambda x: g(x, training=False), jit_compile=False)


@tf.function(jit_compile=False)
def full_fn(x):
    up = resize_bilinear(g(x, training=False), (512, 1024), align_corners=True)
    return tf.argmax(tf.nn.softmax(up), axis=-1)


res = {}
for name, fn in [
    ("eager g(x)", lambda x: g(x, training=False)),
    ("tf.function g(x)", logits_fn),
    ("tf.function g(x)+upsample+softmax+argmax", full_fn),
]:
    np.asarray(fn(x))
    rows = []
    for _ in range(3):
        b0, o0, t0 = busy(), own(), time.perf_counter()
        out = np.asarray(fn(x))
        wall = time.perf_counter() - t0
        o = own() - o0
        f = max(0.0, busy() - b0 - o)
        rows.append((round(wall, 3), round(o, 2), round(f, 2)))
    quiet = [r[0] for r in rows if r[2] < 0.05 * r[0]]
    res[name] = {
        "median_s": statistics.median(r[0] for r in rows),
        "quiet_median_s": statistics.median(quiet) if quiet else None,
        "wall_own_foreign": rows,
    }
print(json.dumps(res, indent=1))
