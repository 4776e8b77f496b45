"""Which fast path runs where: one policy keyed by (backend, device type, compute dtype).

Every fast path computes what the plain Keras op computes (tested on every backend), only on
another kernel or with other tensors in memory. A path is on only where a benchmark showed it
faster (``record`` names the section of benchmarks/RESULTS.md it rests on); everywhere else,
GPUs included until measured on one, and float16 (never measured), the plain Keras op runs.

``override`` (a context manager) and the environment variable ``KERAS_FADA_FAST_PATHS`` force
paths on or off, to A/B each path on a new device:

    KERAS_FADA_FAST_PATHS="all=off,tf_direct_dilation=on" python benchmarks/fada_step.py

Example:
>>> with override(device="gpu"):
...     enabled("tf_direct_dilation", "float32")
False
"""

import contextlib
import contextvars
import dataclasses
import functools
import os

import keras

ENV_VAR = "KERAS_FADA_FAST_PATHS"


@dataclasses.dataclass(frozen=True)
class FastPath:
    """A fast path: what it does, where it is on (``(backend, device, dtype)`` triples) and the
    benchmark record those rest on."""

    what: str
    on: frozenset
    record: str


def _on(backends, dtypes=("float32",), devices=("cpu",)):
    return frozenset((b, dev, d) for b in backends for dev in devices for d in dtypes)


_F32 = ("float32",)
_F32_BF16 = ("float32", "bfloat16")
_R = "benchmarks/RESULTS.md, Measurements behind each optimisation: "

#: The policy. Devices and dtypes not listed run the plain Keras op.
PATHS = {
    "tf_direct_dilation": FastPath(
        "dilated convolutions with <= 256 input channels as tf.nn.conv2d(dilations=...), not "
        "space-to-batch (keras_fada/backend/tensorflow_conv.py); float16 has no CPU kernel",
        _on(["tensorflow"], _F32_BF16),
        _R + "Direct dilated convolutions and fused momentum on TensorFlow (f32 and bf16 table)",
    ),
    "tf_wide_same_gemm": FastPath(
        "stride-1 'same' convolutions with >= 1024 input channels as one GEMM + shift-and-add",
        _on(["tensorflow"], _F32_BF16),
        _R + "The discriminator's first convolution as one GEMM on TensorFlow (f32 and bf16 steps)",
    ),
    "tf_bf16_pointwise_gemm": FastPath(
        "bfloat16 1x1 convolutions as GEMMs (oneDNN's bf16 1x1 weight gradient is slow)",
        _on(["tensorflow"], ("bfloat16",)),
        _R + "Frozen BatchNorm folding and bf16 1x1 GEMMs on TensorFlow",
    ),
    "tf_fold_batch_norm": FastPath(
        "frozen BatchNorm folded into the bias-free convolution it reads (FeatureExtractor)",
        _on(["tensorflow"], _F32_BF16),
        _R + "Frozen BatchNorm folding and bf16 1x1 GEMMs on TensorFlow (slower on torch and JAX)",
    ),
    "tf_fused_momentum": FastPath(
        "TorchSGD's momentum update as one ResourceApplyMomentum kernel (float32 variables)",
        _on(["tensorflow"], _F32),
        _R + "Direct dilated convolutions and fused momentum on TensorFlow (99 -> 63 ms per step)",
    ),
    "jax_pointwise_gemm": FastPath(
        "1x1 convolutions as GEMMs on XLA",
        _on(["jax"], _F32),
        _R + "keras_fada.ops.conv2d: each backend's fast kernel (JAX 47.96 -> 19.38 s)",
    ),
    "jax_tap_weight_gradient": FastPath(
        "stride-1 k x k convolutions' weight gradient as per-tap GEMMs (keras_fada/backend/jax_conv.py)",
        _on(["jax"], _F32),
        _R + "keras_fada.ops.conv2d: each backend's fast kernel (JAX 19.38 -> 15.81 s)",
    ),
    "jax_materialized_relu": FastPath(
        "ReLU computed once and alone kept for the backward pass (keras_fada/backend/jax_materialize.py)",
        _on(["jax"], _F32),
        _R + "JAX's two-program step and the materialised ReLU",
    ),
    "torch_nchw_conv": FastPath(
        "convolutions in NCHW memory behind NHWC views, kernels and optimiser slots in OIHW memory "
        "(keras_fada/backend/torch_conv.py)",
        _on(["torch"], _F32),
        _R + "keras_fada.ops.conv2d: each backend's fast kernel (torch 17.62 -> 13.82 s); "
        "Intermediate tensors released; kernels and optimiser slots in OIHW memory on torch",
    ),
    "torch_in_place": FastPath(
        "frozen BatchNorm, ReLU and Add overwrite a donated input (keras_fada/backend/torch_in_place.py)",
        _on(["torch"], _F32),
        _R + "Elementwise layers in place on torch",
    ),
    "aspp_one_gemm": FastPath(
        "the ASPP classifier's four dilated convolutions as one GEMM + shift-and-add",
        _on(["tensorflow", "jax", "torch"], _F32) | _on(["tensorflow"], ("bfloat16",)),
        _R + "The one-GEMM ASPP classifier (f32 all backends; TF bf16 step 0.66 -> 0.65x)",
    ),
}

_context = contextvars.ContextVar("keras_fada_fast_paths", default=None)


def _parse(value):
    """``{"all" | path name: bool}`` from ``"all=off,tf_direct_dilation=on"``."""
    from keras_fada.config import ConfigError

    forced = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, flag = item.partition("=")
        name, flag = name.strip(), flag.strip().lower()
        if name != "all" and name not in PATHS:
            raise ConfigError(
                f"{ENV_VAR}: unknown fast path {name!r}; expected 'all' or one of {sorted(PATHS)}"
            )
        if flag not in ("on", "off", "1", "0", "true", "false"):
            raise ConfigError(f"{ENV_VAR}: {item!r}: expected NAME=on or NAME=off")
        forced[name] = flag in ("on", "1", "true")
    return forced


@functools.lru_cache(maxsize=8)
def _env_layer(value):
    return {"paths": _parse(value), "device": None}


def _layer():
    layer = _context.get()
    if layer is None:
        layer = _env_layer(os.environ.get(ENV_VAR, ""))
    return layer


@contextlib.contextmanager
def override(device=None, **paths):
    """Within the block, force paths on or off (``all=False``, ``tf_direct_dilation=True``) and/or
    take the device type to be ``device`` (``"cpu"``, ``"gpu"``). Applies when a function is
    traced (TensorFlow, JAX) or run eagerly (torch). ``all`` resets the forcing of outer layers.

    Example:
    >>> with override(all=False):  # the plain Keras ops everywhere
    ...     y = keras_fada.ops.conv2d(x, kernel, padding="same", dilation_rate=2)
    """
    unknown = set(paths) - set(PATHS) - {"all"}
    if unknown:
        raise ValueError(f"unknown fast paths {sorted(unknown)}; expected 'all' or one of {sorted(PATHS)}")
    outer = _layer()
    forced = {} if "all" in paths else dict(outer["paths"])
    forced.update({name: bool(flag) for name, flag in paths.items()})
    token = _context.set({"paths": forced, "device": device or outer["device"]})
    try:
        yield
    finally:
        _context.reset(token)


@functools.lru_cache(maxsize=4)
def _default_device(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "jax":
        import jax

        return jax.default_backend()
    return None


def device_type(tensor=None):
    """``"cpu"``, ``"gpu"`` (or another accelerator's name) on which the current backend computes:
    ``tensor``'s device on torch, else the backend's default device."""
    layer = _layer()
    if layer["device"] is not None:
        return layer["device"]
    backend = keras.backend.backend()
    if backend == "torch":
        device = getattr(tensor, "device", None)
        if not hasattr(device, "type"):
            device = keras.ops.zeros(()).device
        return "gpu" if device.type == "cuda" else device.type
    return _default_device(backend) or "cpu"


def enabled(name, dtype="float32", tensor=None):
    """Whether fast path ``name`` runs on this backend and device in ``dtype`` (the dtype it
    computes in), after the overrides. ``tensor`` tells torch the device (see ``device_type``)."""
    forced = _layer()["paths"]
    if name in forced:
        return forced[name]
    if "all" in forced:
        return forced["all"]
    dtype = keras.backend.standardize_dtype(dtype)
    return (keras.backend.backend(), device_type(tensor), dtype) in PATHS[name].on


def table():
    """The policy as Markdown rows: path, where it is on, the record (docs/performance.md)."""
    rows = ["| path | on for (backend, device, dtype) | record |", "|---|---|---|"]
    for name, path in PATHS.items():
        where = ", ".join("/".join(key) for key in sorted(path.on))
        rows.append(f"| `{name}` | {where} | {path.record.removeprefix(_R)} |")
    return "\n".join(rows)
