"""resize_bilinear: align_corners and half-pixel conventions against NumPy, and its gradient."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fada.ops import resize_bilinear
from tests.support import numpy_reference as ref
from tests.support.backend_utils import value_and_grad

ATOL = 1e-5


def np_(x):
    return keras.ops.convert_to_numpy(x)


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


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("in_size,out_size", [(5, 17), (13, 6), (7, 7), (1, 9), (9, 1)])
def test_interpolation_matrix_from_tensors_matches_numpy(in_size, out_size, align_corners):
    from keras_fada.ops import interpolation_matrix, interpolation_matrix_tensor

    sizes = [ops.convert_to_tensor(v, dtype="int32") for v in (in_size, out_size)]
    got = np_(interpolation_matrix_tensor(*sizes, align_corners=align_corners))
    np.testing.assert_allclose(got, interpolation_matrix(in_size, out_size, align_corners), atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="unknown dims exist in TF graphs only")
@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_with_unknown_spatial_dims_in_a_tf_graph(align_corners):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 2)), tf.TensorSpec((None, None))])
    def to_size_of(x, like):
        return resize_bilinear(x, ops.shape(like), align_corners=align_corners)

    x = np.random.randn(1, 7, 9, 2).astype("float32")
    got = np_(to_size_of(x, np.zeros((19, 5), "float32")))
    want = ops.image.resize(x, (19, 5), interpolation="bilinear", antialias=False)
    want = ref.resize_align_corners(x, 19, 5) if align_corners else np_(want)
    np.testing.assert_allclose(got, want, atol=ATOL)
