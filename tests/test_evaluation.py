"""mIoU, CCD (Eq. 9), multi-scale fusion, the callbacks, and resuming an interrupted run."""

import keras
import numpy as np
import pytest

from keras_fada import evaluation, metrics
from tests.support import fada_fixtures as fx
from tests.support import numpy_reference as ref


def test_confusion_and_miou_match_a_direct_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (3, 9, 11))
    labels[rng.random(labels.shape) < 0.2] = 255
    preds = rng.integers(0, 4, (3, 9, 11))
    iou = []
    for c in range(4):
        valid = labels != 255
        inter = ((labels == c) & (preds == c) & valid).sum()
        union = (((labels == c) | (preds == c)) & valid).sum()
        iou.append(inter / union)
    cm = metrics.confusion_matrix(labels, preds, 4)
    assert cm.sum() == (labels != 255).sum()
    np.testing.assert_allclose(metrics.iou_per_class(cm), iou, atol=1e-9)
    assert metrics.mean_iou(cm) == pytest.approx(np.mean(iou))
    assert metrics.mean_iou(cm, classes=[0, 2]) == pytest.approx((iou[0] + iou[2]) / 2)


def _ccd_direct(features, labels, k):
    """Eq. 9 literally: centres, intra-class spread, pairwise centre distances."""
    present = [i for i in range(k) if (labels == i).any()]
    mu = {i: features[labels == i].mean(0) for i in present}
    out = np.full(k, np.nan)
    for i in present:
        intra = ((features[labels == i] - mu[i]) ** 2).sum(1).mean()
        out[i] = sum(intra / ((mu[i] - mu[j]) ** 2).sum() for j in present if j != i) / (len(present) - 1)
    return out


def test_class_center_distance_matches_eq9_with_both_domains_pooled():
    rng = np.random.default_rng(1)
    k, c = 5, 7
    src_f, tgt_f = rng.normal(size=(2, 4, 6, c)), rng.normal(size=(3, 4, 6, c)) + 0.5
    src_l, tgt_l = rng.integers(0, k - 1, (2, 4, 6)), rng.integers(0, k - 1, (3, 4, 6))  # class 4 absent
    src_l[0, 0, 0] = 255
    acc = metrics.ClassCenterAccumulator(k)
    acc.update(src_f, src_l)
    acc.update(tgt_f, tgt_l)
    feats = np.concatenate([src_f.reshape(-1, c), tgt_f.reshape(-1, c)])
    labels = np.concatenate([src_l.reshape(-1), tgt_l.reshape(-1)])
    keep = labels != 255
    want = _ccd_direct(feats[keep], labels[keep], k)
    got = acc.class_center_distance()
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.isnan(got[4])


def test_ccd_is_low_for_tight_far_apart_clusters():
    rng = np.random.default_rng(2)
    centres = np.eye(3) * 10
    labels = rng.integers(0, 3, (1, 10, 10))
    tight = centres[labels] + 0.01 * rng.normal(size=(1, 10, 10, 3))
    loose = centres[labels] + 3.0 * rng.normal(size=(1, 10, 10, 3))
    a, b = metrics.ClassCenterAccumulator(3), metrics.ClassCenterAccumulator(3)
    a.update(tight, labels)
    b.update(loose, labels)
    assert np.nanmean(a.class_center_distance()) < 1e-4 < np.nanmean(b.class_center_distance())


def test_labels_are_sampled_at_feature_grid_centres():
    labels = np.arange(16).reshape(1, 4, 4)
    np.testing.assert_array_equal(metrics.nearest_downsample(labels, (2, 2)), [[[5, 7], [13, 15]]])


def test_multiscale_fusion_averages_softmax_over_scales_and_flips():
    model = fx.tiny_fada()
    images = np.random.default_rng(3).normal(size=(1, 8, 12, 3)).astype("float32")
    got = evaluation.predict_probabilities(model, images, (16, 24), scales=(1.0, 1.5), flip=True)
    seg = model.segmentor
    total = 0
    for scale in (1.0, 1.5):
        size = (int(round(8 * scale)), int(round(12 * scale)))
        x = (
            images
            if scale == 1.0
            else keras.ops.convert_to_numpy(
                keras.ops.image.resize(images, size, interpolation="bilinear", antialias=False)
            )
        )
        for flip in (False, True):
            xi = x[:, :, ::-1] if flip else x
            p = ref.softmax(
                ref.resize_align_corners(keras.ops.convert_to_numpy(seg(xi)).astype(np.float64), 16, 24)
            )
            total = total + (p[:, :, ::-1] if flip else p)
    np.testing.assert_allclose(got, total / 4, atol=1e-5)


def test_predict_and_evaluate_at_a_second_image_size():
    """TF retraces predict/evaluate for a new size with unknown spatial dims (issue 20, item 5)."""
    model = fx.tiny_fada()
    rng = np.random.default_rng(5)
    for h, w in [(16, 32), (13, 23)]:
        x = rng.normal(size=(2, h, w, 3)).astype("float32")
        got = model.predict(x, verbose=0)
        low = keras.ops.convert_to_numpy(model.segmentor(x)).astype(np.float64)
        np.testing.assert_allclose(got, ref.resize_align_corners(low, h, w), atol=1e-4)
        labels = rng.integers(0, fx.K, (2, h, w)).astype("int32")
        # FADA's evaluate() loss is its source loss: the logits divided by T (official quirk).
        want = ref.cross_entropy_ignore(ref.resize_align_corners(low, h, w) / model.temperature, labels)
        assert model.evaluate(x, labels, verbose=0, return_dict=True)["loss"] == pytest.approx(want, rel=1e-4)
