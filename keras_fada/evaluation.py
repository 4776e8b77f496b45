"""Evaluation loops shared by the callbacks and the CLI: mIoU (single / multi-scale) and CCD."""

import sys
import time

import keras
import numpy as np
from keras import ops

from keras_fada import metrics
from keras_fada.ops import resize_bilinear

#: How multi-scale testing resizes its inputs: ``official`` as ``multi_scale_inference`` of the
#: official test.py (``int(size * scale)``, bilinear with ``align_corners=True``); ``half_pixel``
#: rounds the size and samples half-pixel centres (this package's earlier convention).
SCALE_RESIZES = ("official", "half_pixel")


class Progress:
    """A ``keras.utils.Progbar`` over images with images/s and the ETA; silent if not ``verbose``.

    Example:
    >>> bar = Progress(len(spec), verbose=True)   # total None = unknown
    >>> bar.add(batch_size)                       # after each batch
    >>> bar.close()
    """

    def __init__(self, total, verbose=True):
        interactive = getattr(sys.stdout, "isatty", lambda: False)()
        self.bar = None
        if verbose:
            # A log file gets a line every 10 s, a terminal a live bar.
            self.bar = keras.utils.Progbar(
                total, unit_name="image", stateful_metrics=["images/s"], interval=0.05 if interactive else 10
            )
        self.done, self.start, self.closed = 0, time.perf_counter(), False

    def add(self, n):
        if self.bar is None:
            return
        self.done += int(n)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.done, [("images/s", rate)])
        self.closed = self.bar.target is not None and self.done >= self.bar.target

    def close(self):
        """Ends the bar (a count shorter than announced, or an unknown one)."""
        if self.bar is not None and not self.closed:
            self.bar.update(self.done, finalize=True)
            self.closed = True


def cityscapes_label_ids(num_classes):
    """The Cityscapes label id of each class of a 19-, 16- (SYNTHIA) or 13-class (Cross-City)
    network: the ids that cityscapesscripts' evaluator and the Cityscapes server read; ``None``
    for another class count.

    Example:
    >>> cityscapes_label_ids(16)[9]   # SYNTHIA's class 9, sky
    23
    """
    from keras_fada.data import labels as L

    maps = {19: L.CITYSCAPES_19_MAP, 16: L.CITYSCAPES_16_MAP, 13: L.CROSSCITY_13_MAP}
    if num_classes not in maps:
        return None
    label_id = {class_id: label_id for label_id, class_id in maps[num_classes].items()}
    return np.array([label_id[c] for c in range(num_classes)], np.uint8)


def _segmentor_of(model):
    return getattr(model, "segmentor", model)


def _predict(model, x):
    """``model.predict_on_batch(x)``; under a TF strategy with several replicas ``predict``, as
    ``predict_on_batch`` there gives every replica the whole batch and returns their outputs
    concatenated (twice the images on 2 replicas)."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        return model.predict(x, batch_size=len(x), verbose=0)
    return model.predict_on_batch(x)


def _batches(data):
    for batch in data:
        images, labels = batch[0], batch[1]
        yield ops.convert_to_numpy(images).astype("float32"), ops.convert_to_numpy(labels)


def scaled_size(height, width, scale, scale_resize="official"):
    """Input size of one multi-scale pass: ``int(size * scale)`` as the official code, or
    rounded (``half_pixel``); at least 1."""
    if scale_resize not in SCALE_RESIZES:
        raise ValueError(f"scale_resize must be one of {SCALE_RESIZES}, got {scale_resize!r}")
    to_int = int if scale_resize == "official" else (lambda v: int(round(v)))
    return max(to_int(height * scale), 1), max(to_int(width * scale), 1)


def predict_probabilities(
    model, images, label_size, scales=(1.0,), flip=False, align_corners=True, scale_resize="official"
):
    """Class probabilities at ``label_size``, fused over scales (and flips) as the official
    ``multi_scale_inference``: each pass is upsampled to the label size, soft-maxed, summed,
    and divided by the number of passes. ``scale_resize`` (:data:`SCALE_RESIZES`) is how the
    inputs are rescaled; ``align_corners`` how the logits are upsampled."""
    segmentor = _segmentor_of(model)
    h, w = images.shape[1:3]
    total = None
    passes = 0
    for scale in scales:
        size = scaled_size(h, w, scale, scale_resize)
        corners = scale_resize == "official"
        scaled = images if size == (h, w) else resize_bilinear(images, size, align_corners=corners)
        for flipped in (False, True) if flip else (False,):
            x = ops.flip(scaled, axis=2) if flipped else scaled
            logits = _predict(segmentor, ops.convert_to_numpy(x))
            logits = resize_bilinear(ops.convert_to_tensor(logits), label_size, align_corners=align_corners)
            probs = ops.softmax(logits, axis=-1)
            if flipped:
                probs = ops.flip(probs, axis=2)
            probs = ops.convert_to_numpy(probs)
            total = probs if total is None else total + probs
            passes += 1
    return total / passes


def confusion_over(
    model, data, num_classes, scales=(1.0,), flip=False, align_corners=True, scale_resize="official",
    progress=None,
):  # fmt: skip
    """Accumulated confusion matrix of ``model`` over ``(images, labels)`` batches;
    ``progress`` (a :class:`Progress`) counts the images."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for images, labels in _batches(data):
        if labels.ndim == 4:
            labels = labels[..., 0]
        probs = predict_probabilities(
            model, images, labels.shape[1:3], scales, flip, align_corners, scale_resize
        )
        confusion += metrics.confusion_matrix(labels, probs.argmax(-1), num_classes)
        if progress is not None:
            progress.add(len(images))
    if progress is not None:
        progress.close()
    return confusion


def evaluate_dataset(
    model, spec, num_classes, size=None, batch_size=1, scales=(1.0,), flip=False, scale_resize="official",
    verbose=False,
):  # fmt: skip
    """Confusion matrix of ``model`` on a labelled ``DatasetSpec`` (images resized to ``size``,
    default the spec's evaluation size; labels at full resolution); ``verbose``: a progress bar."""
    from keras_fada.data import make_eval_dataset

    ds = make_eval_dataset(spec, batch_size, size=tuple(size) if size else "eval")
    progress = Progress(len(spec), verbose) if verbose else None
    return confusion_over(
        model, ds, num_classes, scales=tuple(scales), flip=flip, scale_resize=scale_resize, progress=progress
    )


def class_center_distance(model, datasets, num_classes, progress=None):
    """Per-class CCD (Eq. 9) of F's features over labelled batches of one or more domains;
    ``progress`` (a :class:`Progress`) counts the images."""
    features = _segmentor_of(model).feature_extractor
    accumulator = metrics.ClassCenterAccumulator(num_classes)
    for data in datasets:
        for images, labels in _batches(data):
            if labels.ndim == 4:
                labels = labels[..., 0]
            accumulator.update(ops.convert_to_numpy(_predict(features, images)), labels)
            if progress is not None:
                progress.add(len(images))
    if progress is not None:
        progress.close()
    return accumulator.class_center_distance()
