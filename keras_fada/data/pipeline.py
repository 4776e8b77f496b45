"""The shared ``tf.data`` input pipeline: decode, the official transforms, batching.

Every builder works on any :class:`~keras_fada.data.datasets.DatasetSpec`.  Batches hold float32 RGB
images in [0, 255] (the model normalises them) and int32 train-id labels with 255 = ignore.  They are
plain ``tf.data`` structures, so ``model.fit`` accepts them on the TensorFlow, JAX and PyTorch backends.

Randomness is stateless: every element gets the seed ``(seed, position in the stream)``, so a pipeline
is reproducible whatever the degree of parallelism.

Batch structures:

* :func:`make_adaptation_dataset` -> ``{"source_images": (N,H,W,3) float32, "source_labels": (N,H,W)
  int32, "target_images": (N,H',W',3) float32}``
* :func:`make_supervised_dataset`, :func:`make_self_distillation_dataset` -> ``(images, labels)``
* :func:`make_eval_dataset` -> ``(images, labels)`` with labels at their full, original resolution
* :func:`make_inference_dataset` -> ``(images, paths)``
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_fada.data import io as dio
from keras_fada.data.datasets import DatasetError, DatasetSpec, find_size_mismatches
from keras_fada.data.labels import IGNORE_LABEL
from keras_fada.data.sampling import SUB_EPOCH_SIZE, ClassBalancedSampler, class_presence

AUTOTUNE = tf.data.AUTOTUNE
#: torchvision ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2), the official value.
OFFICIAL_JITTER = (0.5, 0.5, 0.5, 0.2)
_REPORTED: set = set()


# ------------------------------------------------------------------------------------ transforms
def resize_image(image: tf.Tensor, size) -> tf.Tensor:
    """Bicubic resize (antialiased when shrinking, like PIL) of a float image in [0, 255]."""
    out = tf.image.resize(image, size, method="bicubic", antialias=True)
    return tf.clip_by_value(out, 0.0, 255.0)


def resize_label(label: tf.Tensor, size) -> tf.Tensor:
    """Nearest-neighbour resize of an (H, W) label map; keeps the dtype."""
    return tf.image.resize(label[..., None], size, method="nearest")[..., 0]


def _grey(x):
    return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)


def color_jitter(image: tf.Tensor, seed, strength=OFFICIAL_JITTER) -> tf.Tensor:
    """torchvision ``ColorJitter(b, c, s, h)`` on a float RGB image in [0, 255], seeded (stateless).

    Factors are drawn uniformly from [max(0, 1-b), 1+b] etc. and hue from [-h, h]; the four operations
    are applied in a random order, each followed by clipping, as in torchvision.
    """
    b, c, s, h = (float(v) for v in strength)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    bf = tf.random.stateless_uniform([], seeds[0], max(0.0, 1 - b), 1 + b)
    cf = tf.random.stateless_uniform([], seeds[1], max(0.0, 1 - c), 1 + c)
    sf = tf.random.stateless_uniform([], seeds[2], max(0.0, 1 - s), 1 + s)
    hf = tf.random.stateless_uniform([], seeds[3], -h, h)
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[4]))
    x = image / 255.0

    def brightness(x):
        return tf.clip_by_value(x * bf, 0.0, 1.0)

    def contrast(x):
        mean = tf.reduce_mean(_grey(x))
        return tf.clip_by_value(cf * x + (1 - cf) * mean, 0.0, 1.0)

    def saturation(x):
        return tf.clip_by_value(sf * x + (1 - sf) * _grey(x), 0.0, 1.0)

    def hue(x):
        return tf.clip_by_value(tf.image.adjust_hue(x, hf), 0.0, 1.0)

    enabled = (b > 0, c > 0, s > 0, h > 0)
    all_ops = (brightness, contrast, saturation, hue)
    for k in range(4):
        branches = [
            (lambda x=x, op=op: op(x)) if on else (lambda x=x: x)
            for op, on in zip(all_ops, enabled, strict=True)
        ]
        x = tf.switch_case(order[k], branches)
    return x * 255.0


def random_scale_crop_flip(image, label, seed, scale_range=(0.5, 1.5), crop_size=(512, 1024), flip_prob=0.5):
    """Random scale (bicubic image, nearest label), crop to ``crop_size`` (image padded with 0, label
    with 255 where the scaled image is smaller), horizontal flip with probability ``flip_prob``."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    shape = tf.shape(image)
    scale = tf.random.stateless_uniform([], seeds[0], float(scale_range[0]), float(scale_range[1]))
    new_h = tf.maximum(tf.cast(tf.cast(shape[0], tf.float32) * scale, tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.cast(shape[1], tf.float32) * scale, tf.int32), 1)
    image = resize_image(image, tf.stack([new_h, new_w]))
    label = resize_label(label, tf.stack([new_h, new_w]))
    ch, cw = int(crop_size[0]), int(crop_size[1])
    pad_h, pad_w = tf.maximum(ch - new_h, 0), tf.maximum(cw - new_w, 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=0.0)
    label = tf.pad(label, [[0, pad_h], [0, pad_w]], constant_values=tf.cast(IGNORE_LABEL, label.dtype))
    h, w = new_h + pad_h, new_w + pad_w
    y0 = tf.random.stateless_uniform([], seeds[1], 0, h - ch + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], seeds[2], 0, w - cw + 1, dtype=tf.int32)
    image = image[y0 : y0 + ch, x0 : x0 + cw]
    label = label[y0 : y0 + ch, x0 : x0 + cw]
    flip = tf.random.stateless_uniform([], seeds[3]) < flip_prob
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    image.set_shape([ch, cw, 3])
    label.set_shape([ch, cw])
    return image, label


def _random_flip(image, label, seed, flip_prob):
    flip = tf.random.stateless_uniform([], tf.cast(seed, tf.int64)) < flip_prob
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    if label is not None:
        label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


# ------------------------------------------------------------------------------------ loading
def _files(spec: DatasetSpec, with_labels: bool):
    images, labels = spec.list_files()
    if not with_labels:
        return images, None
    if labels is None:
        raise DatasetError(f"{spec.name}: this split has no labels; expected {spec.layout}")
    key = (spec.name, spec.root, spec.label_dir, len(images))
    if key not in _REPORTED:  # one warning per dataset and process, naming all mismatched pairs
        _REPORTED.add(key)
        find_size_mismatches(images, labels, spec.name)
    return images, labels


def _loader(spec: DatasetSpec, with_labels: bool):
    lut = dio.label_lut(spec)
    fmt = spec.label_format

    def load(img_path, lbl_path=None):  # in the graph (no GIL) for PNG / JPEG; see keras_fada.data.io
        img = dio.decode_image_in_graph(img_path)
        lbl = dio.decode_label_in_graph(lbl_path, fmt, lut) if with_labels else None
        return tf.cast(img, tf.float32), lbl

    return load


def _element_seed(seed: int, position):
    return tf.stack([tf.constant(int(seed), tf.int64), tf.cast(position, tf.int64)])


def _jitter_strength(jitter):
    if jitter is True:
        return OFFICIAL_JITTER
    if not jitter:
        return None
    return tuple(float(v) for v in jitter)


def _index_stream(n, *, shuffle, repeat, seed, indices=None, start=0):
    """File indices in stream order, from stream position ``start`` on (a resumed run continues
    where the interrupted one stopped without decoding what it skips)."""
    if indices is None and not shuffle:
        indices = np.arange(n)
    if indices is not None:
        indices = np.asarray(indices, np.int64)
        first = indices[start % len(indices) :] if repeat else indices[start:]
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(first, tf.int64))
        if repeat:
            ds = ds.concatenate(tf.data.Dataset.from_tensor_slices(tf.constant(indices)).repeat())
        return ds

    # Epoch e is a stateless permutation seeded by (seed, e): every new iterator of the dataset
    # yields the same sequence (a seeded ``shuffle`` would advance its state per iterator).
    def epoch(e):
        keys = tf.random.stateless_uniform([n], tf.stack([tf.constant(int(seed), tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(tf.cast(tf.argsort(keys), tf.int64))

    if not repeat and start >= n:
        return tf.data.Dataset.range(0)
    epochs = tf.data.Dataset.range(start // n, 2**62) if repeat else tf.data.Dataset.range(1)
    return epochs.flat_map(epoch).skip(start % n)


def balanced_indices(spec: DatasetSpec, num_samples: int | None = None, seed: int = 0) -> np.ndarray:
    """File indices (into ``spec.list_files()``) drawn by the official class-balanced sampler."""
    images, labels = spec.list_files()
    if num_samples is None:
        num_samples = SUB_EPOCH_SIZE * math.ceil(max(len(images), SUB_EPOCH_SIZE) / SUB_EPOCH_SIZE)
    stats = class_presence(spec, labels)
    return ClassBalancedSampler(stats, spec.num_classes, seed=seed).draw(int(num_samples))


def _train_stream(
    spec: DatasetSpec,
    *,
    with_labels: bool,
    size,
    jitter,
    scale_range,
    crop_size,
    flip_prob,
    class_balanced,
    num_samples,
    shuffle,
    repeat,
    seed,
    start=0,
):
    """Unbatched (image, label-or-None) stream with the training transforms, from element
    ``start`` on (each element keeps the seed of its position)."""
    images, labels = _files(spec, with_labels)
    n = len(images)
    indices = None
    if class_balanced:
        if not with_labels:
            raise ValueError("class-balanced sampling needs a labelled dataset")
        indices = balanced_indices(spec, num_samples, seed)
    elif num_samples is not None:
        rng = np.random.default_rng(seed)
        reps = math.ceil(num_samples / n)
        indices = np.concatenate([rng.permutation(n) if shuffle else np.arange(n) for _ in range(reps)])
        indices = indices[:num_samples]
    idx = _index_stream(n, shuffle=shuffle, repeat=repeat, seed=seed, indices=indices, start=start)
    img_paths = tf.constant(images)
    lbl_paths = tf.constant(labels) if with_labels else None
    load = _loader(spec, with_labels)
    strength = _jitter_strength(jitter)
    if size == "train":
        size = spec.train_size
    crop = crop_size is not None

    def label_to_image(label, image):  # a label whose size differs is resized (nearest) to the image
        return tf.cond(
            tf.reduce_all(tf.shape(label) == tf.shape(image)[:2]),
            lambda: label,
            lambda: resize_label(label, tf.shape(image)[:2]),
        )

    def element(position, i):
        seed_el = _element_seed(seed, position)
        s_jit, s_geo = tf.unstack(tf.random.experimental.stateless_split(seed_el, 2))
        if with_labels:
            image, label = load(tf.gather(img_paths, i), tf.gather(lbl_paths, i))
        else:
            image, label = load(tf.gather(img_paths, i))
        if strength is not None:  # official order: jitter first, then resize / scale+crop, then flip
            image = color_jitter(image, s_jit, strength)
        if crop:
            if label is None:
                label = tf.zeros(tf.shape(image)[:2], tf.uint8)
            else:
                label = label_to_image(label, image)
            image, label_c = random_scale_crop_flip(
                image, label, s_geo, scale_range or (1.0, 1.0), crop_size, flip_prob
            )
            label = label_c if with_labels else None
        else:
            if size is not None:
                image = resize_image(image, size)
                image.set_shape([size[0], size[1], 3])
                if label is not None:
                    label = resize_label(label, size)
                    label.set_shape([size[0], size[1]])
            elif label is not None:
                label = label_to_image(label, image)
            if flip_prob:
                image, label = _random_flip(image, label, s_geo, flip_prob)
        if label is None:
            return image
        return image, tf.cast(label, tf.int32)

    return idx.enumerate(start=start).map(element, num_parallel_calls=AUTOTUNE, deterministic=True)


# ------------------------------------------------------------------------------------ builders
def make_supervised_dataset(
    spec: DatasetSpec,
    batch_size: int,
    *,
    size="train",
    jitter=False,
    scale_range=None,
    crop_size=None,
    flip_prob: float = 0.0,
    class_balanced: bool = False,
    num_samples: int | None = None,
    shuffle: bool = True,
    repeat: bool = True,
    seed: int = 0,
    drop_remainder: bool = True,
    start: int = 0,
) -> tf.data.Dataset:
    """``(images (N,H,W,3) float32 [0,255], labels (N,H,W) int32)`` batches for source-only training.

    Args:
        size: (height, width) resize, ``"train"`` for ``spec.train_size`` or ``None`` for none (a
            label of another size is then resized, nearest, to its image). Ignored with ``crop_size``.
        jitter: ``True`` for the official ColorJitter(0.5, 0.5, 0.5, 0.2), a 4-tuple, or ``False``.
        scale_range, crop_size, flip_prob: random scale + crop (labels padded with 255) + flip.
        class_balanced: the official class-balanced file sampling (class statistics cached on disk).
        num_samples: length of one pass of the index stream (the official MAX_ITER x BATCH);
            default: the dataset size (uniform) or whole sub-epochs of 3000 (class-balanced).
        repeat: repeat the stream forever (use ``steps_per_epoch`` in ``fit``).
        start: batches already trained on (a resumed run): the stream continues after them.
    """
    ds = _train_stream(
        spec,
        with_labels=True,
        size=size,
        jitter=jitter,
        scale_range=scale_range,
        crop_size=crop_size,
        flip_prob=flip_prob,
        class_balanced=class_balanced,
        num_samples=num_samples,
        shuffle=shuffle,
        repeat=repeat,
        seed=seed,
        start=int(start) * batch_size,
    )
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def make_self_distillation_dataset(
    spec: DatasetSpec,
    batch_size: int,
    *,
    crop_size=(512, 1024),
    scale_range=(0.5, 1.5),
    flip_prob: float = 0.5,
    jitter=True,
    seed: int = 0,
    repeat: bool = True,
    start: int = 0,
) -> tf.data.Dataset:
    """The official self-distillation recipe on a (pseudo-)labelled target spec (see
    :meth:`DatasetSpec.with_labels`): jitter -> random scale 0.5-1.5 -> crop 512x1024 -> flip 0.5;
    ``start``: batches already trained on."""
    return make_supervised_dataset(
        spec,
        batch_size,
        size=None,
        jitter=jitter,
        scale_range=scale_range,
        crop_size=crop_size,
        flip_prob=flip_prob,
        seed=seed,
        repeat=repeat,
        start=start,
    )


def make_adaptation_dataset(
    source: DatasetSpec,
    target: DatasetSpec,
    batch_size: int,
    *,
    source_size="train",
    target_size="train",
    jitter=True,
    class_balanced: bool = False,
    num_samples: int | None = None,
    seed: int = 0,
    repeat: bool = True,
    start: int = 0,
) -> tf.data.Dataset:
    """FADA batches ``{"source_images", "source_labels", "target_images"}``, ``batch_size`` images per
    domain (the official BATCH=8 is 4 source + 4 target).  Colour jitter on the source only; the
    target is resized and never jittered or flipped; target labels are never read. ``start``:
    batches already trained on (a resumed run continues after them)."""
    src = _train_stream(
        source,
        with_labels=True,
        size=source_size,
        jitter=jitter,
        scale_range=None,
        crop_size=None,
        flip_prob=0.0,
        class_balanced=class_balanced,
        num_samples=num_samples,
        shuffle=True,
        repeat=repeat,
        seed=seed,
        start=int(start) * batch_size,
    )
    tgt = _train_stream(
        target,
        with_labels=False,
        size=target_size,
        jitter=False,
        scale_range=None,
        crop_size=None,
        flip_prob=0.0,
        class_balanced=False,
        num_samples=None,
        shuffle=True,
        repeat=True,
        seed=seed + 1,
        start=int(start) * batch_size,
    )

    def to_dict(s, t):
        return {"source_images": s[0], "source_labels": s[1], "target_images": t}

    ds = tf.data.Dataset.zip((src, tgt)).map(to_dict)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def make_eval_dataset(spec: DatasetSpec, batch_size: int = 1, *, size="eval") -> tf.data.Dataset:
    """``(images, labels)`` in listing order, once.  Images resized to ``size`` (``"eval"`` =
    ``spec.eval_size``, ``None`` = original); labels int32 at their **full original resolution**
    (batch_size > 1 needs equal label sizes, as in Cityscapes)."""
    images, labels = _files(spec, True)
    load = _loader(spec, True)
    if size == "eval":
        size = spec.eval_size

    def element(img_path, lbl_path):
        image, label = load(img_path, lbl_path)
        if size is not None:
            image = resize_image(image, size)
            image.set_shape([size[0], size[1], 3])
        return image, tf.cast(label, tf.int32)

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def make_inference_dataset(spec: DatasetSpec, batch_size: int = 1, *, size="eval") -> tf.data.Dataset:
    """``(images, paths)`` in listing order, once (e.g. for writing pseudo labels)."""
    images, _ = spec.list_files()
    load = _loader(spec, False)
    if size == "eval":
        size = spec.eval_size

    def element(path):
        image, _ = load(path)
        if size is not None:
            image = resize_image(image, size)
            image.set_shape([size[0], size[1], 3])
        return image, path

    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
