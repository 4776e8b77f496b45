"""Forward + backward of DeepLabV2's ASPP classifier: the one-GEMM form against the four dilated
convolutions it replaces, on the backend named by KERAS_BACKEND; one JSON line on stdout.

    KERAS_BACKEND=jax python benchmarks/aspp_classifier.py                  # 33x65x2048 (256x512 input)
    KERAS_BACKEND=torch python benchmarks/aspp_classifier.py --height 65 --width 129

The gradient is taken with respect to the features and every kernel and bias (loss: sum of
squares of the logits); milliseconds are medians over ``--iters`` calls after one warm-up.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np

from keras_fada.models import ASPPClassifier


def four_convolutions(aspp, values, features):
    out = None
    for conv, kernel, bias in zip(aspp.conv2d_list, values[0::2], values[1::2], strict=True):
        y = conv.convolution_op(features, kernel) + bias
        out = y if out is None else out + y
    return out


def one_gemm(aspp, values, features):
    return aspp.stateless_call(values, [], features)[0]


def gradient_fn(forward):
    """``(values, features) -> gradients`` of ``sum(forward(...) ** 2)``, compiled where the
    backend compiles (jax.jit, tf.function)."""
    backend = keras.backend.backend()

    def loss(values, features):
        return keras.ops.sum(keras.ops.square(forward(values, features)))

    if backend == "jax":
        import jax

        fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return lambda v, f: jax.block_until_ready(fn(v, f))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def fn(values, features):
            with tf.GradientTape() as tape:
                tape.watch([values, features])
                y = loss(values, features)
            return tape.gradient(y, [values, features])

        return lambda v, f: [np.asarray(g) for g in tf.nest.flatten(fn(v, f))]
    import torch

    def fn(values, features):
        leaves = [torch.tensor(np.asarray(v), requires_grad=True) for v in [*values, features]]
        loss(leaves[:-1], leaves[-1]).backward()
        return [t.grad for t in leaves]

    return fn


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=33)
    p.add_argument("--width", type=int, default=65)
    p.add_argument("--channels", type=int, default=2048)
    p.add_argument("--iters", type=int, default=7)
    args = p.parse_args()

    aspp = ASPPClassifier(19)
    shape = (1, args.height, args.width, args.channels)
    aspp.build(shape)
    features = np.random.default_rng(0).normal(size=shape).astype("float32")
    values = [keras.ops.convert_to_numpy(v) for v in aspp.trainable_variables]
    result = {"benchmark": "aspp_classifier", "backend": keras.backend.backend(), "shape": list(shape)}
    for name, form in (("one_gemm", one_gemm), ("four_convolutions", four_convolutions)):
        step = gradient_fn(lambda v, f, form=form: form(aspp, v, f))
        step(values, features)
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            step(values, features)
            times.append(time.perf_counter() - t0)
        result[f"{name}_ms"] = round(1000 * statistics.median(times), 1)
    result["speedup"] = round(result["four_convolutions_ms"] / result["one_gemm_ms"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
