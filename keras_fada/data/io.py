"""Reading image and label files into NumPy arrays; errors name the file.

Images are decoded with TensorFlow (``tf.io.decode_image``, RGB).  8-bit label PNGs are read with
Pillow because TensorFlow expands palette PNGs (GTA5) to colours, while the palette *indices* are the
label ids.  16-bit SYNTHIA labels are decoded with ``tf.io.decode_png(dtype=tf.uint16)`` (Pillow
decodes them wrongly) and channel 0 holds the class id.

:func:`decode_image_in_graph` and :func:`decode_label_in_graph` give the same values as graph ops
(no ``tf.py_function``, so no GIL: a ``tf.data`` map decodes on every core); files they cannot take
in the graph (not a complete PNG / JPEG, palette or grey PNGs of another bit depth) fall back to the
readers above, whose errors name the file.
"""

from __future__ import annotations

import zlib

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


# ------------------------------------------------------------------------------------ in-graph decoding
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_IHDR_MIN = 33 + 12 + 12  # signature + IHDR + one IDAT + IEND


def _ihdr_crc_delta() -> bytes:
    """XOR that turns the IHDR CRC of a palette PNG into that of the same IHDR with colour type 0
    (CRC-32 is affine: crc(a ^ d) = crc(a) ^ crc(d) ^ crc(0) for equal lengths)."""
    d = bytearray(17)  # "IHDR" + 13 data bytes; the colour type is data byte 9
    d[4 + 9] = 3
    return (zlib.crc32(bytes(d)) ^ zlib.crc32(bytes(17))).to_bytes(4, "big")


def _byte(data, pos):
    return tf.cast(tf.io.decode_raw(tf.strings.substr(data, pos, 1), tf.uint8)[0], tf.int64)


def _complete_png(data, size):
    return tf.logical_and(
        size >= _IHDR_MIN,
        tf.logical_and(
            tf.equal(tf.strings.substr(data, 0, 8), _PNG_SIG),
            tf.equal(tf.strings.substr(data, tf.maximum(size - 12, 0), 12), _PNG_END),
        ),
    )


def _complete_jpeg(data, size):
    return tf.logical_and(
        size >= 4,
        tf.logical_and(
            tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8"),
            tf.equal(tf.strings.substr(data, tf.maximum(size - 2, 0), 2), b"\xff\xd9"),
        ),
    )


def _first_idat(data, size):
    """Offset of the first IDAT chunk (walking the chunks after IHDR), or -1."""

    def cond(off, found, k):
        return tf.logical_and(tf.logical_and(found < 0, k < 64), tf.logical_and(off >= 33, off + 8 <= size))

    def body(off, found, k):
        b = tf.cast(tf.io.decode_raw(tf.strings.substr(data, off, 4), tf.uint8), tf.int64)
        length = ((b[0] * 256 + b[1]) * 256 + b[2]) * 256 + b[3]
        found = tf.where(tf.equal(tf.strings.substr(data, off + 4, 4), "IDAT"), off, found)
        return off + 12 + length, found, k + 1

    start = (tf.constant(33, tf.int64), tf.constant(-1, tf.int64), tf.constant(0))
    return tf.while_loop(cond, body, start)[1]


def _palette_as_grey(data, size, idat):
    """The PNG with colour type 0 and nothing between IHDR and IDAT: decodes to the palette indices."""
    crc = tf.io.decode_raw(tf.strings.substr(data, 29, 4), tf.uint8)
    crc = tf.bitwise.bitwise_xor(crc, tf.constant(list(_ihdr_crc_delta()), tf.uint8))
    crc = tf.strings.reduce_join(
        tf.gather(tf.constant([bytes([i]) for i in range(256)]), tf.cast(crc, tf.int32))
    )
    parts = [tf.strings.substr(data, 0, 25), tf.constant(b"\x00"), tf.strings.substr(data, 26, 3), crc]
    return tf.strings.join([*parts, tf.strings.substr(data, idat, size - idat)])


def decode_image_in_graph(path) -> tf.Tensor:
    """(H, W, 3) uint8 RGB from a path tensor, as :func:`read_image`; PNG and JPEG decode in the graph.

    Example: ``tf.data.Dataset.from_tensor_slices(paths).map(decode_image_in_graph)``.
    """
    data = tf.io.read_file(path)
    size = tf.cast(tf.strings.length(data), tf.int64)
    fast = tf.logical_or(_complete_png(data, size), _complete_jpeg(data, size))
    img = tf.cond(
        fast,
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        lambda: tf.py_function(lambda p: read_image(p.numpy().decode()), [path], tf.uint8),
    )
    img.set_shape([None, None, 3])
    return img


def decode_label_in_graph(path, label_format: str, lut: np.ndarray) -> tf.Tensor:
    """(H, W) uint8 train ids from a path tensor, as :func:`read_label`: 8-bit PNGs (grey, palette
    indices, channel 0 of RGB(A)) and SYNTHIA's 16-bit ``png16_ch0`` decode in the graph.

    Example: ``ds.map(lambda p: decode_label_in_graph(p, "png8", label_lut(spec)))``.
    """
    if label_format not in ("png8", "png16_ch0"):
        raise ValueError(f"unknown label format {label_format!r}")
    full = np.full(65536 if label_format == "png16_ch0" else 256, L.IGNORE_LABEL, np.uint8)
    n = min(len(lut), len(full))
    full[:n] = np.asarray(lut, np.uint8)[:n]  # values beyond the table -> 255, as apply_label_map
    table = tf.constant(full)
    data = tf.io.read_file(path)
    size = tf.cast(tf.strings.length(data), tf.int64)
    complete = _complete_png(data, size)

    def mapped(raw):
        return tf.gather(table, tf.cast(raw, tf.int32))

    def fallback():  # Pillow / eager TensorFlow; errors name the file
        return tf.py_function(lambda p: read_label(p.numpy().decode(), label_format, lut), [path], tf.uint8)

    if label_format == "png16_ch0":
        ids = tf.cond(
            complete, lambda: mapped(tf.io.decode_png(data, channels=0, dtype=tf.uint16)[..., 0]), fallback
        )
    else:
        depth, ctype = tf.cond(
            complete,
            lambda: (_byte(data, tf.constant(24, tf.int64)), _byte(data, tf.constant(25, tf.int64))),
            lambda: (tf.constant(0, tf.int64), tf.constant(-1, tf.int64)),
        )
        idat = tf.cond(
            tf.logical_and(tf.equal(depth, 8), tf.equal(ctype, 3)),
            lambda: _first_idat(data, size),
            lambda: tf.constant(-1, tf.int64),
        )
        direct = tf.logical_and(tf.equal(depth, 8), tf.reduce_any(tf.equal(ctype, [0, 2, 4, 6])))
        branch = tf.where(direct, 0, tf.where(idat > 0, 1, 2))
        ids = tf.switch_case(
            tf.cast(branch, tf.int32),
            [
                lambda: mapped(tf.io.decode_png(data, channels=0)[..., 0]),  # grey or channel 0
                lambda: mapped(tf.io.decode_png(_palette_as_grey(data, size, idat), channels=1)[..., 0]),
                fallback,
            ],
        )
    ids.set_shape([None, None])
    return ids
