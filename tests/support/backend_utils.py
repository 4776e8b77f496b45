"""Gradients of a function of one tensor on whichever Keras backend the tests run on."""

import keras
import numpy as np


def value_and_grad(fn, x):
    """Return ``(fn(x), d fn / d x)`` as NumPy arrays, for a scalar ``fn``."""
    backend = keras.backend.backend()
    x = np.asarray(x, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = fn(t)
        g = tape.gradient(y, t)  # None when y does not depend on t
        return np.asarray(y), np.zeros_like(x) if g is None else np.asarray(g)
    if backend == "jax":
        import jax

        y, g = jax.value_and_grad(fn)(x)
        return np.asarray(y), np.asarray(g)
    if backend == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        y = fn(t)
        if not y.requires_grad:  # fully detached: the gradient is zero by construction
            return y.detach().cpu().numpy(), np.zeros_like(x)
        y.backward()
        grad = t.grad if t.grad is not None else torch.zeros_like(t)
        return y.detach().cpu().numpy(), grad.cpu().numpy()
    raise NotImplementedError(backend)


def value_and_grads(fn, values):
    """Return ``(fn(*values), [d fn / d v for v in values])`` as NumPy arrays, for a scalar ``fn``."""
    backend = keras.backend.backend()
    values = [np.asarray(v, dtype="float32") for v in values]
    if backend == "tensorflow":
        import tensorflow as tf

        ts = [tf.constant(v) for v in values]
        with tf.GradientTape() as tape:
            tape.watch(ts)
            y = fn(*ts)
        grads = tape.gradient(y, ts)
        return np.asarray(y), [
            np.zeros_like(v) if g is None else np.asarray(g) for v, g in zip(values, grads, strict=True)
        ]
    if backend == "jax":
        import jax

        y, grads = jax.value_and_grad(lambda vs: fn(*vs))(values)
        return np.asarray(y), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        ts = [torch.tensor(v, requires_grad=True) for v in values]
        y = fn(*ts)
        y.backward()
        grads = [
            np.zeros_like(v) if t.grad is None else t.grad.cpu().numpy()
            for v, t in zip(values, ts, strict=True)
        ]
        return y.detach().cpu().numpy(), grads
    raise NotImplementedError(backend)
