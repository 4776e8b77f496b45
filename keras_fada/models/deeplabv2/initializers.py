"""PyTorch's initialisations of the official networks, drawn on the host with NumPy.

Drawing with NumPy instead of ``keras.random`` gives the same distributions on every backend but
avoids one XLA compilation per weight shape on JAX (tens of seconds to build ResNet-101 otherwise).
``keras.utils.set_random_seed`` seeds NumPy too, so builds stay reproducible; an explicit ``seed``
makes every call return the same values.
"""

import math

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fada")
class HostRandom(keras.initializers.Initializer):
    """Normal (``stddev = scale / sqrt(fan)``) or uniform (``bound = scale / sqrt(fan)``) weights.

    Args:
        distribution: ``"normal"`` or ``"uniform"``.
        scale: the standard deviation / bound before the fan division.
        mode: ``"fan_in"``, ``"fan_out"`` (of a ``(kh, kw, in, out)`` kernel) or ``None`` (no
            division).
        seed: optional int seed; ``None`` draws from NumPy's global generator.

    Example:
    >>> init = HostRandom("normal", scale=math.sqrt(2.0), mode="fan_out")  # kaiming_normal_(fan_out)
    >>> init((3, 3, 64, 64)).shape
    (3, 3, 64, 64)
    """

    def __init__(self, distribution="normal", scale=1.0, mode=None, seed=None):
        if distribution not in ("normal", "uniform"):
            raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
        if mode not in (None, "fan_in", "fan_out"):
            raise ValueError(f"mode must be None, 'fan_in' or 'fan_out', got {mode!r}")
        self.distribution, self.scale, self.mode, self.seed = distribution, float(scale), mode, seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(s) for s in shape)
        width = self.scale
        if self.mode is not None:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan = receptive * (shape[-2] if self.mode == "fan_in" else shape[-1])
            width /= math.sqrt(max(fan, 1))
        rng = np.random.default_rng(self.seed) if self.seed is not None else np.random
        if self.distribution == "normal":
            values = rng.standard_normal(shape) * width
        else:
            values = rng.uniform(-width, width, shape)
        return ops.convert_to_tensor(np.asarray(values, dtype=keras.backend.standardize_dtype(dtype)))

    def get_config(self):
        return {"distribution": self.distribution, "scale": self.scale, "mode": self.mode, "seed": self.seed}


def kaiming_normal_fan_out():
    """``nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`` (official ResNet init)."""
    return HostRandom("normal", scale=math.sqrt(2.0), mode="fan_out")


def torch_default_conv_kernel():
    """``nn.Conv2d``'s default kernel init: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    return HostRandom("uniform", scale=1.0, mode="fan_in")


def torch_default_conv_bias(fan_in):
    """``nn.Conv2d``'s default bias init, which depends on the kernel's fan-in."""
    return HostRandom("uniform", scale=1.0 / math.sqrt(max(int(fan_in), 1)))


def normal(stddev):
    """``w.data.normal_(0, stddev)``."""
    return HostRandom("normal", scale=stddev)
