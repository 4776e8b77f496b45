"""Reading image and label files into NumPy arrays; errors name the file.

Images are decoded with TensorFlow (``tf.io.decode_image``, RGB).  8-bit label PNGs are read with
Pillow because TensorFlow expands palette PNGs (GTA5) to colours, while the palette *indices* are the
label ids.  16-bit SYNTHIA labels are decoded with ``tf.io.decode_png(dtype=tf.uint16)`` (Pillow
decodes them wrongly) and channel 0 holds the class id.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_fada.data import labels as L
from keras_fada.data.datasets import DatasetError, DatasetSpec


def label_lut(spec: DatasetSpec) -> np.ndarray:
    size = 65536 if spec.label_format == "png16_ch0" else 256
    return L.lookup_table(spec.label_map, size)


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DatasetError(f"cannot read {path!r}: {e}") from e


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    data = _read_bytes(path)
    try:
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        return img.numpy()
    except (tf.errors.OpError, ValueError) as e:
        msg = getattr(e, "message", str(e))
        raise DatasetError(f"cannot decode image {path!r} (unreadable or truncated): {msg}") from None


def read_raw_label(path: str, label_format: str) -> np.ndarray:
    """(H, W) raw label values: uint8 for ``png8`` (palette indices or grey values), uint16 for
    ``png16_ch0`` (channel 0)."""
    if label_format == "png16_ch0":
        data = _read_bytes(path)
        try:
            lbl = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
        except (tf.errors.OpError, ValueError) as e:
            msg = getattr(e, "message", str(e))
            raise DatasetError(f"cannot decode label {path!r} (unreadable or truncated): {msg}") from None
        return lbl[..., 0]
    if label_format != "png8":
        raise ValueError(f"unknown label format {label_format!r}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                arr = np.asarray(im)
            elif im.mode in ("I;16", "I;16B", "I", "I;16L"):
                arr = np.asarray(im).astype(np.int64)
                arr = np.where(arr > 255, 256, arr)  # beyond any 8-bit map -> ignored
            else:  # RGB(A) etc.: take channel 0 as the value
                arr = np.asarray(im)[..., 0] if np.asarray(im).ndim == 3 else np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot decode label {path!r} (unreadable or truncated): {e}") from None
    return arr


def read_label(path: str, label_format: str, lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8 train ids (255 = ignore)."""
    return L.apply_label_map(read_raw_label(path, label_format), lut)
