"""A tiny FADA step on a 4+4 batch whose halves differ in valid (labelled, confident) pixels,
shared by the accumulation and data-parallel tests (the latter run it in subprocesses)."""

import functools

import numpy as np

from keras_fada.optimizers import TorchSGD, official_optimizers
from tests.support import fada_fixtures as fx

STEPS = 2


def batch():
    """4 source + 4 target images; the second half has far fewer labelled pixels."""
    a, b = fx.tiny_batch(0), fx.tiny_batch(1)
    b["source_labels"][:, :6] = 255
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def model(mode, accumulation_steps=1):
    """The tiny FADA model with an SGD discriminator (Adam's first step is a sign: too
    sensitive to float noise for an equality test)."""
    m = fx.tiny_fada(mode, accumulation_steps=accumulation_steps)
    opts = official_optimizers(base_lr=0.01, base_lr_d=0.01, max_iter=10)
    opts["discriminator_optimizer"] = TorchSGD(0.05, momentum=0.9)
    m.compile(**opts)
    return m


def tf_dataset(data):
    """``data`` (one batch) repeated, as a ``tf.data`` pipeline: what ``distribute.prepare`` takes."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensors(data).repeat()


def dataset():
    return tf_dataset(batch())


BN_MOMENTUM = 0.5


def bn_segmentor():
    """The tiny segmentor (``fada_fixtures.tiny_segmentor``) behind a BatchNorm on the images: its
    moving statistics after ``STEPS`` steps on a fixed batch are those of the images alone."""
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn")(inputs)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="f_conv")(x)
    features = keras.Model(inputs, x, name="feature_extractor")
    return fx.Segmentor(features, fx.ASPPClassifier(fx.K, dilations=fx.DILATIONS, kernel_stddev=0.3))


def train(m, data=None):
    """``STEPS`` steps of ``fit`` on the batch; the logged losses of the last epoch and the weights."""
    history = m.fit(dataset() if data is None else data, epochs=1, steps_per_epoch=STEPS, verbose=0)
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    return logs, fx.model_params(m)


@functools.cache
def reference(mode):
    """One device, the whole batch, one micro-batch: ``(logs, weights)`` after ``STEPS`` steps."""
    return train(model(mode))


def relative_difference(got, want):
    """The max relative weight difference: max over every weight entry of |got - want| / |want|."""
    return max((np.abs(got[n] - want[n]) / np.maximum(np.abs(want[n]), 1e-12)).max() for n in want)


def update_difference(got, want, start):
    """Max over weights of max|got - want| / max|want - start|: the error relative to the updates
    (float32 storage of the weights alone gives ~3e-5 here)."""
    return max(np.abs(got[n] - want[n]).max() / max(np.abs(want[n] - start[n]).max(), 1e-30) for n in want)
