"""Evaluation maths: confusion-matrix mIoU (official ``test.py``) and Class Center Distance (Eq. 9)."""

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(labels, predictions, num_classes, ignore_index=IGNORE_INDEX):
    """``(K, K)`` counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    index = labels[valid] * num_classes + predictions[valid]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion):
    """IoU_c = I / (U + 1e-10) as the official code: a class never seen nor predicted scores 0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return intersection / (union + 1e-10)


def mean_iou(confusion, classes=None):
    """Mean IoU over all K classes (official), or over the given class indices (e.g. mIoU*13)."""
    iou = iou_per_class(confusion)
    return float(iou.mean() if classes is None else iou[list(classes)].mean())


def nearest_downsample(labels, size):
    """Labels ``(N, H, W)`` at the centres of a ``size`` grid (feature resolution)."""
    labels = np.asarray(labels)
    h, w = labels.shape[1:3]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return labels[:, rows][:, :, cols]


class ClassCenterAccumulator:
    """Streams features and labels of both domains into per-class sums for Eq. 9.

    The class centre ``mu_i`` pools features of source *and* target samples, as the authors
    computed it (official-code-facts §5). Labels are sampled at the feature grid's centres.

    Example:
    >>> acc = ClassCenterAccumulator(num_classes=19)
    >>> acc.update(source_features, source_labels); acc.update(target_features, target_labels)
    >>> ccd = acc.class_center_distance()    # (19,) with NaN for absent classes
    """

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.count = np.zeros(self.num_classes, np.float64)
        self.sum = None
        self.sum_sq = np.zeros(self.num_classes, np.float64)

    def update(self, features, labels):
        features = np.asarray(features, np.float64)
        labels = nearest_downsample(labels, features.shape[1:3]).reshape(-1)
        flat = features.reshape(-1, features.shape[-1])
        if self.sum is None:
            self.sum = np.zeros((self.num_classes, flat.shape[1]), np.float64)
        valid = (labels >= 0) & (labels < self.num_classes) & (labels != self.ignore_index)
        labels, flat = labels[valid], flat[valid]
        self.count += np.bincount(labels, minlength=self.num_classes)
        np.add.at(self.sum, labels, flat)
        self.sum_sq += np.bincount(labels, weights=(flat**2).sum(1), minlength=self.num_classes)

    def class_center_distance(self):
        """CCD per class (NaN for classes without features); average with ``np.nanmean``."""
        if self.sum is None:
            return np.full(self.num_classes, np.nan)
        return class_center_distance_from_moments(self.count, self.sum, self.sum_sq)


def class_center_distance_from_moments(count, total, total_sq):
    """Eq. 9 from per-class counts, feature sums and sums of squared norms.

    ``CCD(i) = 1/(K'-1) * sum_{j != i} intra_i / ||mu_i - mu_j||^2`` with
    ``intra_i = mean_{x in S_i} ||x - mu_i||^2``; K' counts the classes that have features.
    """
    present = count > 0
    ccd = np.full(len(count), np.nan)
    if present.sum() < 2:
        return ccd
    mu = total[present] / count[present, None]
    intra = total_sq[present] / count[present] - (mu**2).sum(1)
    intra = np.maximum(intra, 0.0)
    dist = ((mu[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    k = present.sum()
    ccd[present] = (intra[:, None] / dist).sum(1) / (k - 1)
    return ccd
