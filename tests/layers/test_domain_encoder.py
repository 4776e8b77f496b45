"""DomainEncoder (paper Sec. 3.2): soft, hard and binary encodings against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_fada
from tests.support import numpy_reference as ref
from tests.support.backend_utils import value_and_grad

ATOL = 1e-5


def np_(x):
    return keras.ops.convert_to_numpy(x)


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
