"""FADA's losses (Eq. 5-8, the official soft cross-entropy, the temperature quirk) against NumPy."""

import keras
import numpy as np
import pytest

import keras_fada
from keras_fada import losses
from tests.support import numpy_reference as ref
from tests.support.backend_utils import value_and_grad

ATOL = 1e-5


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_soft_cross_entropy_over_all_2k_channels():
    logits = np.random.randn(2, 4, 5, 6).astype("float32")
    targets = np.random.rand(2, 4, 5, 6).astype("float32")
    got = float(losses.soft_cross_entropy(logits, targets))
    assert got == pytest.approx(ref.soft_cross_entropy(logits.astype(np.float64), targets), abs=ATOL)
    # log-softmax over K channels only would give a different number
    half = ref.soft_cross_entropy(logits[..., :3].astype(np.float64), targets[..., :3])
    assert abs(got - half) > 1e-3


def test_discriminator_loss_eq5_official_weights():
    k = 5
    d_s = np.random.randn(2, 3, 4, 2 * k).astype("float32")
    d_t = np.random.randn(2, 3, 4, 2 * k).astype("float32")
    a_s = ref.soft_labels(np.random.randn(2, 3, 4, k) * 3)
    a_t = ref.soft_labels(np.random.randn(2, 3, 4, k) * 3)
    z = np.zeros_like(a_s)
    want = 0.5 * ref.soft_cross_entropy(d_s.astype(np.float64), np.concatenate([a_s, z], -1)) + 0.5 * (
        ref.soft_cross_entropy(d_t.astype(np.float64), np.concatenate([z, a_t], -1))
    )
    got = float(losses.discriminator_loss(d_s, d_t, a_s.astype("float32"), a_t.astype("float32")))
    assert got == pytest.approx(want, abs=ATOL)
    paper = float(losses.discriminator_loss(d_s, d_t, a_s, a_t, source_weight=1.0, target_weight=1.0))
    assert paper == pytest.approx(2 * want, abs=2 * ATOL)


def test_adversarial_loss_eq6_uses_source_half():
    k = 4
    d_t = np.random.randn(1, 5, 5, 2 * k).astype("float32")
    a_t = ref.soft_labels(np.random.randn(1, 5, 5, k) * 2)
    want = ref.soft_cross_entropy(d_t.astype(np.float64), np.concatenate([a_t, np.zeros_like(a_t)], -1))
    assert float(losses.adversarial_loss(d_t, a_t.astype("float32"))) == pytest.approx(want, abs=ATOL)


def test_hard_encoding_excludes_unconfident_pixels_from_the_mean():
    logits = np.random.randn(1, 2, 2, 4).astype("float32")
    a = np.zeros((1, 2, 2, 2), "float32")
    a[0, 0, 0, 1] = 1.0  # a single confident pixel
    want = ref.soft_cross_entropy(
        logits[:, :1, :1].astype(np.float64), np.concatenate([a, 0 * a], -1)[:, :1, :1]
    )
    assert float(losses.adversarial_loss(logits, a)) == pytest.approx(want, abs=ATOL)
    assert float(losses.adversarial_loss(logits, np.zeros_like(a))) == 0.0


def test_segmentation_loss_ignores_255_and_applies_temperature():
    logits = np.random.randn(2, 4, 5, 6).astype("float32")
    labels = np.random.randint(0, 6, size=(2, 4, 5))
    labels[np.random.rand(2, 4, 5) < 0.3] = 255
    assert float(losses.segmentation_loss(logits, labels)) == pytest.approx(
        ref.cross_entropy_ignore(logits.astype(np.float64), labels), abs=ATOL
    )
    assert float(losses.segmentation_loss(logits, labels[..., None], temperature=1.8)) == pytest.approx(
        ref.cross_entropy_ignore(logits.astype(np.float64) / 1.8, labels), abs=ATOL
    )


def test_all_ignored_batch_gives_zero_not_nan():
    logits = np.random.randn(1, 3, 3, 4).astype("float32")
    labels = np.full((1, 3, 3), 255)
    value, grad = value_and_grad(lambda t: losses.segmentation_loss(t, labels), logits)
    assert float(value) == 0.0
    assert np.isfinite(grad).all() and (grad == 0).all()


def test_adversarial_loss_reaches_the_features():
    """Eq. 6 back-propagates through D into F's output; the target encoding stays a constant."""
    disc = keras_fada.FineGrainedDiscriminator(num_classes=3, filters=(8, 4))
    feats = np.random.randn(1, 5, 6, 7).astype("float32")
    a_t = ref.soft_labels(np.random.randn(1, 5, 6, 3)).astype("float32")
    disc(feats)
    value, grad = value_and_grad(lambda f: losses.adversarial_loss(disc(f), a_t), feats)
    assert np.isfinite(value) and np.abs(grad).sum() > 0
