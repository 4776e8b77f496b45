"""Evaluation loops shared by the callbacks and the CLI: mIoU (single / multi-scale) and CCD."""

import numpy as np
from keras import ops

from keras_fada import metrics
from keras_fada.ops import resize_bilinear


def _segmentor_of(model):
    return getattr(model, "segmentor", model)


def _batches(data):
    for batch in data:
        images, labels = batch[0], batch[1]
        yield ops.convert_to_numpy(images).astype("float32"), ops.convert_to_numpy(labels)


def predict_probabilities(model, images, label_size, scales=(1.0,), flip=False, align_corners=True):
    """Class probabilities at ``label_size``, fused over scales (and flips) as the official
    ``multi_scale_inference``: each pass is upsampled to the label size, soft-maxed, summed,
    and divided by the number of passes."""
    segmentor = _segmentor_of(model)
    h, w = images.shape[1:3]
    total = None
    passes = 0
    for scale in scales:
        size = (max(int(round(h * scale)), 1), max(int(round(w * scale)), 1))
        scaled = images if size == (h, w) else resize_bilinear(images, size, align_corners=False)
        for flipped in (False, True) if flip else (False,):
            x = ops.flip(scaled, axis=2) if flipped else scaled
            logits = segmentor.predict_on_batch(ops.convert_to_numpy(x))
            logits = resize_bilinear(ops.convert_to_tensor(logits), label_size, align_corners=align_corners)
            probs = ops.softmax(logits, axis=-1)
            if flipped:
                probs = ops.flip(probs, axis=2)
            probs = ops.convert_to_numpy(probs)
            total = probs if total is None else total + probs
            passes += 1
    return total / passes


def confusion_over(model, data, num_classes, scales=(1.0,), flip=False, align_corners=True):
    """Accumulated confusion matrix of ``model`` over ``(images, labels)`` batches."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for images, labels in _batches(data):
        if labels.ndim == 4:
            labels = labels[..., 0]
        probs = predict_probabilities(model, images, labels.shape[1:3], scales, flip, align_corners)
        confusion += metrics.confusion_matrix(labels, probs.argmax(-1), num_classes)
    return confusion


def evaluate_dataset(model, spec, num_classes, size=None, batch_size=1, scales=(1.0,), flip=False):
    """Confusion matrix of ``model`` on a labelled ``DatasetSpec`` (images resized to ``size``,
    default the spec's evaluation size; labels at full resolution)."""
    from keras_fada.data import make_eval_dataset

    ds = make_eval_dataset(spec, batch_size, size=tuple(size) if size else "eval")
    return confusion_over(model, ds, num_classes, scales=tuple(scales), flip=flip)


def class_center_distance(model, datasets, num_classes):
    """Per-class CCD (Eq. 9) of F's features over labelled batches of one or more domains."""
    features = _segmentor_of(model).feature_extractor
    accumulator = metrics.ClassCenterAccumulator(num_classes)
    for data in datasets:
        for images, labels in _batches(data):
            if labels.ndim == 4:
                labels = labels[..., 0]
            accumulator.update(ops.convert_to_numpy(features.predict_on_batch(images)), labels)
    return accumulator.class_center_distance()
