"""keras_fada.backend.fast_paths: each fast path runs only where the policy has it on (measured:
CPUs, not float16), the plain Keras op elsewhere; forced on, each path equals the plain op."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_fada.ops as kops
from keras_fada.backend import (
    fast_paths,
    jax_conv,
    jax_materialize,
    tensorflow_conv,
    torch_conv,
    torch_in_place,
)
from keras_fada.config import ConfigError
from keras_fada.layers import Conv2D
from keras_fada.models.deeplabv2 import aspp_classifier
from tests.support import numpy_reference as ref
from tests.support.backend_utils import value_and_grad, value_and_grads

BACKEND = keras.backend.backend()

# Each fast route, by the function that only that route calls.
ROUTES = {
    "pointwise_gemm": (kops, "_pointwise_as_gemm"),
    "wide_same_gemm": (kops, "_same_convolution_as_gemm"),
    "tf_direct_dilation": (tensorflow_conv, "dilated_conv2d"),
    "jax_tap_weight_gradient": (jax_conv, "conv2d"),
    "jax_materialized_relu": (jax_materialize, "materialized_relu"),
    "torch_nchw_conv": (torch_conv, "conv2d"),
    "torch_oihw_kernels": (torch_conv, "store_channels_first"),
    "torch_in_place": (torch_in_place, "donating"),
    "aspp_one_gemm": (aspp_classifier, "shifted_taps_sum"),
    "fold_batch_norm": (Conv2D, "call_scaled"),
}

# What runs on this backend on a CPU (the records in benchmarks/RESULTS.md); TensorFlow's 1x1
# GEMM is its bfloat16 route.
ON_CPU = {
    "tensorflow": {
        "pointwise_gemm",
        "wide_same_gemm",
        "tf_direct_dilation",
        "aspp_one_gemm",
        "fold_batch_norm",
        "fused_momentum",
    },
    "jax": {"pointwise_gemm", "jax_tap_weight_gradient", "jax_materialized_relu", "aspp_one_gemm"},
    "torch": {"torch_nchw_conv", "torch_oihw_kernels", "torch_in_place", "aspp_one_gemm"},
}[BACKEND]


def _value_and_grad(fn, x):
    """``value_and_grad``, jitted on JAX (op by op, JAX compiles every small op: seconds)."""
    if BACKEND != "jax":
        return value_and_grad(fn, x)
    import jax

    y, g = jax.jit(jax.value_and_grad(fn))(np.asarray(x, "float32"))
    return np.asarray(y), np.asarray(g)


def test_policy_is_on_only_where_measured():
    # Measured on CPUs only, in float32 (all) and bfloat16 (TensorFlow); never float16 or a GPU.
    for name, path in fast_paths.PATHS.items():
        assert path.on and "RESULTS.md" in path.record, name
        for backend, device, dtype in path.on:
            assert device == "cpu" and dtype in ("float32", "bfloat16"), name
            assert dtype == "float32" or backend == "tensorflow", name
    assert not any("float16" in key for path in fast_paths.PATHS.values() for key in path.on)
    assert ("tensorflow", "cpu", "float16") not in fast_paths.PATHS["tf_direct_dilation"].on
    assert fast_paths.table().count("\n") == len(fast_paths.PATHS) + 1


def test_overrides_and_environment_variable(monkeypatch):
    monkeypatch.delenv(fast_paths.ENV_VAR, raising=False)
    with fast_paths.override(device="gpu"):
        assert fast_paths.device_type() == "gpu"
        assert not any(fast_paths.enabled(name, "float32") for name in fast_paths.PATHS)
        with fast_paths.override(tf_fused_momentum=True):
            assert fast_paths.enabled("tf_fused_momentum", "float16")
            with fast_paths.override(all=False):  # "all" resets the outer forcing
                assert not fast_paths.enabled("tf_fused_momentum")
    monkeypatch.setenv(fast_paths.ENV_VAR, "all=on, aspp_one_gemm=off")
    assert fast_paths.enabled("jax_pointwise_gemm", "float16")
    assert not fast_paths.enabled("aspp_one_gemm")
    with fast_paths.override(aspp_one_gemm=True):
        assert fast_paths.enabled("aspp_one_gemm") and fast_paths.enabled("torch_in_place")
    for bad, words in (("nope=on", "unknown fast path 'nope'"), ("aspp_one_gemm=maybe", "expected NAME=on")):
        monkeypatch.setenv(fast_paths.ENV_VAR, bad)
        with pytest.raises(ConfigError, match=words):
            fast_paths.enabled("aspp_one_gemm")
    with pytest.raises(ValueError, match="unknown fast paths"):
        with fast_paths.override(nope=True):
            pass


def _count_routes(monkeypatch):
    counts = dict.fromkeys([*ROUTES, "fused_momentum"], 0)
    for route, (owner, name) in ROUTES.items():
        original = getattr(owner, name)

        def counted(*args, _route=route, _original=original, **kwargs):
            counts[_route] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        original = tf.raw_ops.ResourceApplyMomentum

        def momentum(**kwargs):
            counts["fused_momentum"] += 1
            return original(**kwargs)

        monkeypatch.setattr(tf.raw_ops, "ResourceApplyMomentum", momentum)
    return counts


def _tiny_network():
    """A FeatureExtractor with every kind of layer a fast path replaces, then an ASPP."""
    from keras_fada.layers import Add, ReLU
    from keras_fada.models.deeplabv2 import FeatureExtractor
    from keras_fada.models.deeplabv2.normalization import FrozenBatchNormalization

    inputs = keras.Input((8, 16, 3))
    relu = ReLU()(FrozenBatchNormalization()(Conv2D(32, 3, padding="same", use_bias=False)(inputs)))
    dilated = Conv2D(32, 3, padding="same", dilation_rate=2)(relu)
    out = Add()([Conv2D(32, 1)(dilated), relu])
    fe = FeatureExtractor(inputs, out)
    aspp = aspp_classifier.ASPPClassifier(3, dilations=(1, 2))
    return lambda t: aspp(fe(t, training=True)), fe.trainable_weights


def _exercise_every_path():
    """The tiny network's forward + backward, a wide 3x3, a bfloat16 1x1 and a TorchSGD step."""
    from keras_fada.optimizers import TorchSGD

    rng = np.random.default_rng(0)
    network, weights = _tiny_network()
    x = rng.normal(size=(1, 8, 16, 3)).astype("float32")
    _value_and_grad(lambda t: ops.sum(network(t)), x)
    wide = rng.normal(size=(1, 4, 5, kops.WIDE_INPUT_CHANNELS)).astype("float32")
    kops.conv2d(wide, 0.01 * rng.normal(size=(3, 3, wide.shape[-1], 2)).astype("float32"), padding="same")
    ones = ops.ones((1, 4, 5, 8), "bfloat16")
    kops.conv2d(ones, ops.ones((1, 1, 8, 4), "bfloat16"))
    optimizer = TorchSGD(0.1, momentum=0.9)
    optimizer.apply([ops.ones(w.shape) for w in weights[:2]], weights[:2])


def test_plain_keras_ops_run_on_a_gpu_and_the_measured_paths_on_a_cpu(monkeypatch):
    monkeypatch.delenv(fast_paths.ENV_VAR, raising=False)
    counts = _count_routes(monkeypatch)
    with fast_paths.override(device="gpu"):
        _exercise_every_path()
    assert counts == dict.fromkeys(counts, 0)
    with fast_paths.override(device="cpu"):
        _exercise_every_path()
    assert {route for route, n in counts.items() if n} == ON_CPU


CONV_CASES = [  # kernel, stride, padding, dilation, input channels, filters, dtype
    (1, 1, "valid", 1, 5, 4, "float32"),
    (1, 2, "valid", 1, 5, 4, "bfloat16"),
    (3, 1, "same", 2, 5, 32, "float32"),
    (3, 1, "same", 1, 5, 32, "bfloat16"),
    (3, 1, "same", 2, kops.WIDE_INPUT_CHANNELS, 3, "float32"),
]


@pytest.mark.parametrize("k,stride,padding,dilation,cin,cout,dtype", CONV_CASES)
def test_every_conv2d_path_forced_on_equals_the_plain_op(k, stride, padding, dilation, cin, cout, dtype):
    rng = np.random.default_rng(k + cin)
    x = rng.normal(size=(2, 7, 9, cin)).astype("float32")
    kernel = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype("float32")
    if dtype == "bfloat16":  # inputs exactly representable: only the output rounding differs
        x, kernel = (ops.convert_to_numpy(ops.cast(ops.cast(a, dtype), "float32")) for a in (x, kernel))
    weights = rng.normal(
        size=ops.conv(x, kernel, strides=stride, padding=padding, dilation_rate=dilation).shape
    )

    def loss(t, kk):
        y = kops.conv2d(ops.cast(t, dtype), ops.cast(kk, dtype), stride, padding, dilation)
        return ops.sum(ops.multiply(ops.cast(y, "float32"), weights.astype("float32")))

    results = {}
    for forced in (True, False):
        with fast_paths.override(all=forced):
            results[forced] = value_and_grads(loss, [x, kernel])
    tol = 1e-4 if dtype == "float32" else 2e-2
    (y_on, g_on), (y_off, g_off) = results[True], results[False]
    np.testing.assert_allclose(y_on, y_off, rtol=tol)
    for name, a, b in zip(("x", "kernel"), g_on, g_off, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)


def test_float16_dilated_convolution_takes_the_plain_op():
    # tf.nn.conv2d with dilations has no float16 CPU kernel ("Current CPU implementations do not
    # yet support dilation rates larger than 1"): mixed_float16 must keep space-to-batch there.
    if BACKEND == "torch":
        pytest.skip("torch has no float16 convolution on the CPU")
    assert not fast_paths.enabled("tf_direct_dilation", "float16")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 9, 11, 8)).astype("float16")
    kernel = (rng.normal(size=(3, 3, 8, 4)) / 6).astype("float16")
    got = ops.convert_to_numpy(kops.conv2d(x, kernel, padding="same", dilation_rate=2)).astype("float32")
    want = ref.conv2d(x.astype("float32"), kernel.astype("float32"), stride=1, pad=2, dilation=2)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


def test_materialized_relu_and_one_gemm_aspp_forced_on_equal_the_plain_ops():
    aspp = aspp_classifier.ASPPClassifier(3, dilations=(1, 2, 6, 12))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 9, 6)).astype("float32")
    aspp.build(x.shape)
    weights = rng.normal(size=(2, 5, 9, 3)).astype("float32")
    results = {}
    for forced in (True, False):
        with fast_paths.override(all=forced):
            results[forced] = (
                _value_and_grad(lambda t: ops.sum(ops.multiply(aspp(t), weights)), x),
                _value_and_grad(lambda t: ops.sum(ops.multiply(kops.materialized_relu(t), x)), x),
            )
    for on, off in zip(results[True], results[False], strict=True):
        np.testing.assert_allclose(on[0], off[0], rtol=1e-5)
        np.testing.assert_allclose(on[1], off[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(results[True][1][1], np.where(x > 0, x, 0))  # d/dx sum(relu(x) * x)


def test_fused_momentum_forced_on_equals_the_plain_update():
    from keras_fada.optimizers import TorchSGD

    rng = np.random.default_rng(5)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(2)]
    finals = {}
    for forced in (True, False):
        with fast_paths.override(all=forced):
            w = keras.Variable(start)
            optimizer = TorchSGD(0.1, momentum=0.9, weight_decay=0.01)
            for g in grads:
                optimizer.apply([ops.convert_to_tensor(g)], [w])
            finals[forced] = ops.convert_to_numpy(w)
    buf, want = np.zeros_like(start), start.copy()
    for g in grads:  # torch.optim.SGD, written out
        buf = 0.9 * buf + g + 0.01 * want
        want = want - 0.1 * buf
    np.testing.assert_allclose(finals[True], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(finals[False], want, rtol=1e-5, atol=1e-6)
