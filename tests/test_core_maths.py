"""FADA's pure maths (Eq. 5-8, the official soft CE, align_corners resizing) against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_fada
from keras_fada import losses
from keras_fada.ops import resize_bilinear
from tests import numpy_reference as ref
from tests.backend_utils import value_and_grad

ATOL = 1e-5


def np_(x):
    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------------------- resize_bilinear
@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((5, 7), (17, 25)), ((9, 13), (4, 6)), ((8, 16), (64, 128)), ((7, 7), (7, 3)), ((1, 4), (3, 9))],
)
def test_resize_align_corners_matches_numpy(in_hw, out_hw):
    x = np.random.randn(2, *in_hw, 3).astype("float32")
    got = np_(resize_bilinear(x, out_hw, align_corners=True))
    np.testing.assert_allclose(got, ref.resize_align_corners(x, *out_hw), atol=ATOL)


def test_resize_align_corners_keeps_corners():
    x = np.random.randn(1, 6, 10, 2).astype("float32")
    got = np_(resize_bilinear(x, (31, 47)))
    for (i, j), (si, sj) in {(0, 0): (0, 0), (0, -1): (0, -1), (-1, 0): (-1, 0), (-1, -1): (-1, -1)}.items():
        np.testing.assert_allclose(got[0, i, j], x[0, si, sj], atol=ATOL)


@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (17, 25)), ((16, 20), (7, 9)), ((9, 13), (9, 26))])
def test_resize_half_pixel_matches_keras_resize(in_hw, out_hw):
    x = np.random.randn(2, *in_hw, 4).astype("float32")
    got = np_(resize_bilinear(x, out_hw, align_corners=False))
    want = np_(ops.image.resize(x, out_hw, interpolation="bilinear", antialias=False))
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_resize_conventions_differ():
    x = np.random.randn(1, 8, 8, 1).astype("float32")
    a = np_(resize_bilinear(x, (64, 64), align_corners=True))
    b = np_(resize_bilinear(x, (64, 64), align_corners=False))
    assert np.abs(a - b).max() > 1e-2


def test_resize_is_differentiable():
    x = np.random.randn(1, 4, 5, 2).astype("float32")
    w = np.random.randn(1, 9, 11, 2).astype("float32")
    _, g = value_and_grad(lambda t: ops.sum(ops.multiply(resize_bilinear(t, (9, 11)), w)), x)
    # The adjoint of the interpolation is its transpose: sum over outputs of weight * w.
    up = ref.resize_align_corners
    want = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = 1.0
        want[idx] = (up(e, 9, 11) * w).sum()
    np.testing.assert_allclose(g, want, atol=1e-4)


# ----------------------------------------------------------------------------- DomainEncoder
@pytest.mark.parametrize("clip", [0.7, 0.8, 0.9, 1.0])
def test_soft_encoding_clips_without_renormalising(clip):
    logits = (4 * np.random.randn(2, 5, 6, 7)).astype("float32")
    got = np_(keras_fada.DomainEncoder("soft", temperature=1.8, clip=clip)(logits))
    want = ref.soft_labels(logits.astype(np.float64), 1.8, clip)
    np.testing.assert_allclose(got, want, atol=ATOL)
    assert got.max() <= clip + 1e-7
    if clip < 1.0:
        assert (got.sum(-1) < 1 - 1e-3).any(), "clipped rows must not be renormalised"


def test_soft_encoding_temperature():
    logits = np.random.randn(1, 3, 3, 5).astype("float32")
    got = np_(keras_fada.DomainEncoder("soft", temperature=3.0, clip=1.0)(logits))
    np.testing.assert_allclose(got, ref.softmax(logits / 3.0), atol=ATOL)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
def test_hard_encoding_threshold(threshold):
    logits = (3 * np.random.randn(2, 4, 5, 6)).astype("float32")
    got = np_(keras_fada.DomainEncoder("hard", temperature=1.0, threshold=threshold)(logits))
    p = ref.softmax(logits.astype(np.float64))
    want = np.eye(6)[p.argmax(-1)] * (p.max(-1, keepdims=True) >= threshold)
    np.testing.assert_array_equal(got, want)
    if threshold == 0.9:
        assert 0 < (got.sum(-1) == 0).sum() < got[..., 0].size


def test_binary_encoding_is_one_channel_of_ones():
    logits = np.random.randn(2, 3, 4, 19).astype("float32")
    encoder = keras_fada.DomainEncoder("binary")
    a = np_(encoder(logits))
    assert a.shape == (2, 3, 4, 1) and (a == 1).all()
    np.testing.assert_array_equal(np_(encoder.source_encoding(a))[0, 0, 0], [1, 0])
    np.testing.assert_array_equal(np_(encoder.target_encoding(a))[0, 0, 0], [0, 1])


def test_encoding_channel_order():
    a = np.random.rand(1, 2, 2, 3).astype("float32")
    src = np_(keras_fada.DomainEncoder.source_encoding(a))
    tgt = np_(keras_fada.DomainEncoder.target_encoding(a))
    np.testing.assert_array_equal(src[..., :3], a)
    np.testing.assert_array_equal(src[..., 3:], 0)
    np.testing.assert_array_equal(tgt[..., :3], 0)
    np.testing.assert_array_equal(tgt[..., 3:], a)


@pytest.mark.parametrize("mode", ["soft", "hard", "binary"])
def test_no_gradient_flows_into_an_encoding(mode):
    logits = np.random.randn(1, 3, 3, 4).astype("float32")
    weights = np.random.randn(1, 3, 3, 4 if mode != "binary" else 1).astype("float32")
    encoder = keras_fada.DomainEncoder(mode, threshold=0.0)
    _, g = value_and_grad(lambda t: ops.sum(ops.multiply(encoder(t), weights)), logits)
    np.testing.assert_array_equal(g, 0.0)


def test_encoder_rejects_unknown_mode():
    with pytest.raises(ValueError, match="soft"):
        keras_fada.DomainEncoder("onehot")


# ----------------------------------------------------------------------------- losses
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


# ----------------------------------------------------------------------------- discriminator
def _discriminator_numpy(disc, x):
    convs = [*disc.hidden, disc.source_head, disc.target_head]
    params = [(np_(c.kernel).astype(np.float64), np_(c.bias).astype(np.float64)) for c in convs]
    h = x.astype(np.float64)
    for kernel, bias in params[:-2]:
        h = ref.leaky_relu(ref.conv3x3_same(h, kernel, bias), 0.2)
    return np.concatenate([ref.conv3x3_same(h, *params[-2]), ref.conv3x3_same(h, *params[-1])], -1)


@pytest.mark.parametrize("num_classes", [1, 5])
def test_discriminator_matches_numpy_and_layout(num_classes):
    disc = keras_fada.FineGrainedDiscriminator(num_classes=num_classes, filters=(6, 4))
    x = np.random.randn(2, 7, 9, 5).astype("float32")
    got = np_(disc(x))
    assert got.shape == (2, 7, 9, 2 * num_classes)
    np.testing.assert_allclose(got, _discriminator_numpy(disc, x), atol=1e-4)


def test_discriminator_official_parameter_count():
    disc = keras_fada.FineGrainedDiscriminator(num_classes=19)
    disc.build((None, None, None, 2048))
    assert disc.count_params() == 5_057_702  # PixelDiscriminator(2048, 256, 19) in the official code


def test_discriminator_init_follows_pytorch_defaults():
    disc = keras_fada.FineGrainedDiscriminator(num_classes=4, filters=(32, 16))
    disc.build((None, None, None, 64))
    bound = 1 / np.sqrt(9 * 64)
    kernel, bias = np_(disc.hidden[0].kernel), np_(disc.hidden[0].bias)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound


# ----------------------------------------------------------------------------- serialisation
def test_layers_round_trip_through_a_keras_file(tmp_path):
    inputs = keras.Input((6, 8, 5))
    logits = keras.layers.Conv2D(3, 1, name="logits")(inputs)
    knowledge = keras_fada.DomainEncoder("hard", temperature=1.5, clip=0.8, threshold=0.2)(logits)
    d = keras_fada.FineGrainedDiscriminator(num_classes=3, filters=(4, 4), negative_slope=0.1)(inputs)
    model = keras.Model(inputs, [knowledge, d])
    x = np.random.randn(2, 6, 8, 5).astype("float32")
    before = [np_(t) for t in model(x)]
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = [np_(t) for t in loaded(x)]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    encoder = next(layer for layer in loaded.layers if isinstance(layer, keras_fada.DomainEncoder))
    assert encoder.get_config()["mode"] == "hard" and encoder.threshold == pytest.approx(0.2)
    disc = next(layer for layer in loaded.layers if isinstance(layer, keras_fada.FineGrainedDiscriminator))
    assert disc.negative_slope == pytest.approx(0.1) and disc.filters == (4, 4)
