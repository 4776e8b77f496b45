"""Export a segmentor for serving: a SavedModel, an ONNX file or a ``.keras`` file.

The exported function takes RGB images ``(N, H, W, 3)`` float32 in ``[0, 255]`` (the network
normalises them itself), of any height and width unless a fixed ``size`` is asked for, and
returns the ``head`` at the input resolution: stride-8 logits upsampled bilinearly with
``align_corners=True`` as in evaluation, their softmax, or the int32 arg-max labels.

Example:
>>> from keras_fada.models.deeplabv2 import deeplabv2_resnet_small
>>> export_segmentor(deeplabv2_resnet_small(19), "out", "keras", head="labels")
'out/model.keras'
"""

from __future__ import annotations

import os

import keras
from keras import ops

import keras_fada.models.deeplabv2  # noqa: F401 - registers the classes a .keras file names
from keras_fada.backend import tracing

FORMATS = ("saved_model", "onnx", "keras")
HEADS = ("logits", "probabilities", "labels")
FILES = {"saved_model": "saved_model", "onnx": "model.onnx", "keras": "model.keras"}

#: (backend, format) -> why that backend cannot export it (the same weights export elsewhere).
UNSUPPORTED = {
    ("torch", "saved_model"): "Keras writes a SavedModel from the tensorflow or jax backend only",
    ("jax", "onnx"): "Keras exports ONNX from JAX through jax2onnx, which the export extra leaves out "
    "(it pulls flax, optax and orbax) and which emitted an invalid MaxPool for this network",
}


class ExportError(ValueError):
    """A format this backend cannot export, or an unknown format / head."""


def check_export(format, head="logits", backend=None):
    """Raises :class:`ExportError` (one line) before any work when ``format`` or ``head`` is unknown or
    the backend cannot export ``format``."""
    backend = backend or keras.backend.backend()
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    if head not in HEADS:
        raise ExportError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
    reason = UNSUPPORTED.get((backend, format))
    if reason:
        others = [b for b in ("tensorflow", "jax", "torch") if (b, format) not in UNSUPPORTED]
        raise ExportError(
            f"the {backend} backend cannot export {format}: {reason}; "
            f"run with KERAS_BACKEND={others[0]} (the same checkpoint loads on every backend)"
        )


def interpolation_weights(in_size, out_size):
    """The ``(out_size, in_size)`` align-corners linear interpolation matrix, from tensors only.

    Output pixel ``o`` samples ``s = o (in - 1) / (out - 1)``; input pixel ``i`` weighs
    ``max(0, 1 - |s - i|)``: ``keras_fada.ops.interpolation_matrix`` for sizes known only when
    the exported function runs.
    """
    in_f = ops.cast(in_size, "float32")
    out_f = ops.cast(out_size, "float32")
    scale = (in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0)
    src = ops.cast(ops.arange(out_size), "float32") * scale
    grid = ops.cast(ops.arange(in_size), "float32")
    return ops.maximum(0.0, 1.0 - ops.abs(ops.expand_dims(src, 1) - ops.expand_dims(grid, 0)))


def upsample_align_corners(x, height, width):
    """``keras_fada.ops.resize_bilinear(x, (height, width), align_corners=True)`` for sizes that
    may be symbolic (two small GEMMs, as there)."""
    shape = ops.shape(x)
    rows = ops.cast(interpolation_weights(shape[1], height), x.dtype)
    cols = ops.cast(interpolation_weights(shape[2], width), x.dtype)
    x = ops.einsum("oh,nhwc->nowc", rows, x)
    return ops.einsum("pw,nhwc->nhpc", cols, x)


def first_argmax(x):
    """``argmax(x, axis=-1)`` as int32 (the first of tied maxima), from max / equal / where / min:
    Keras' TensorFlow argmax bit-casts its input (for -0.0), which ONNX cannot express."""
    k = ops.shape(x)[-1]
    ids = ops.cast(ops.arange(k), "int32")
    hit = ops.equal(x, ops.max(x, axis=-1, keepdims=True))
    return ops.min(ops.where(hit, ids, ops.cast(k, "int32")), axis=-1)


@keras.saving.register_keras_serializable(package="keras_fada")
class ServingSegmentor(keras.Model):
    """A segmentor with its serving head: images in ``[0, 255]`` -> ``head`` at input resolution.

    Example:
    >>> from keras_fada.models.deeplabv2 import deeplabv2_resnet_small
    >>> ServingSegmentor(deeplabv2_resnet_small(5), head="labels")(ops.zeros((1, 40, 56, 3))).shape
    (1, 40, 56)
    """

    def __init__(self, segmentor, head="logits", **kwargs):
        super().__init__(**kwargs)
        if head not in HEADS:
            raise ExportError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
        self.segmentor = segmentor
        self.head = head

    def call(self, images):
        images = ops.cast(images, "float32")
        logits = ops.cast(self.segmentor(images, training=False), "float32")
        shape = ops.shape(images)
        logits = upsample_align_corners(logits, shape[1], shape[2])
        if self.head == "probabilities":
            return ops.softmax(logits, axis=-1)
        if self.head == "labels":
            return first_argmax(logits)
        return logits

    def get_config(self):
        return {
            "name": self.name,
            "head": self.head,
            "segmentor": keras.saving.serialize_keras_object(self.segmentor),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["segmentor"] = keras.saving.deserialize_keras_object(config["segmentor"])
        return cls(**config)


def export_segmentor(segmentor, output, format, head="logits", size=None) -> str:
    """Writes ``segmentor`` with its ``head`` into the folder ``output`` in ``format``.

    Args:
        segmentor: a ``keras_fada.models.deeplabv2.Segmentor`` (input normalisation inside).
        output: the folder to write (created); the file is ``FILES[format]`` in it.
        format: ``"saved_model"`` (``tf.saved_model.load(path).serve``), ``"onnx"``
            (``onnxruntime.InferenceSession(path)``, input ``images``) or ``"keras"``
            (``keras.saving.load_model(path)`` once ``keras_fada`` is imported).
        head: ``"logits"``, ``"probabilities"`` or ``"labels"``.
        size: ``(H, W)`` for a fixed input size; ``None`` for any.

    Returns:
        The path of the exported artefact.
    """
    check_export(format, head)
    model = ServingSegmentor(segmentor, head=head, name=f"{segmentor.name}_{head}")
    h, w = (None, None) if size is None else (int(size[0]), int(size[1]))
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, FILES[format])
    with tracing.exporting():
        model(ops.zeros((1, h or 33, w or 49, 3)))  # builds it (the size is not part of the export)
        if format == "keras":
            model.save(path)
            return path
        spec = keras.InputSpec(shape=(None, h, w, 3), dtype="float32", name="images")
        kind = "tf_saved_model" if format == "saved_model" else "onnx"
        kwargs = {}
        if keras.backend.backend() == "jax" and format == "saved_model":
            # Inference only: jax2tf cannot save the gradient of the custom-VJP ReLU.
            kwargs["jax2tf_kwargs"] = {"with_gradient": False}
        model.export(path, format=kind, input_signature=[spec], verbose=False, **kwargs)
    return path
