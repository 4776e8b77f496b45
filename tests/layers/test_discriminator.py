"""FineGrainedDiscriminator against NumPy and the official layout; both layers round-trip a .keras file."""

import keras
import numpy as np
import pytest

import keras_fada
from tests.support import numpy_reference as ref

ATOL = 1e-5


def np_(x):
    return keras.ops.convert_to_numpy(x)


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
