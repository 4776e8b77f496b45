"""keras_fada.ops.conv2d / layers.Conv2D: the convolution of every network, on each backend's fast
kernel, against a NumPy convolution (values) and keras.ops.conv (gradients)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fada.layers import Conv2D
from keras_fada.ops import conv2d
from tests.support import numpy_reference as ref
from tests.support.backend_utils import value_and_grad

# (kernel, stride, padding, dilation, symmetric padding of the equivalent PyTorch conv, filters):
# every kind of convolution in the DeepLabV2 networks (1x1, strided 1x1 downsample, dilated 3x3,
# the padded-then-valid stride-2 stem and 3x3, ASPP rates), with few filters (XLA's own gradient
# on JAX) and with many (JAX's per-tap weight gradient), on odd sizes so that padding mistakes show.
CASES = [
    (1, 1, "valid", 1, 0, 4),
    (1, 2, "valid", 1, 0, 4),
    (3, 1, "same", 1, 1, 4),
    (3, 1, "same", 2, 2, 4),
    (3, 1, "same", 6, 6, 4),
    (3, 1, "same", 1, 1, 32),
    (3, 1, "same", 2, 2, 40),
    (5, 1, "same", 3, 6, 32),
    (3, 2, "valid", 1, 0, 4),
    (7, 2, "valid", 1, 0, 4),
    (3, 2, "same", 1, None, 4),  # asymmetric "same": the generic keras.ops.conv path on every backend
]


def _data(k, seed=0, cin=5, cout=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 13, 17, cin)).astype("float32")
    kernel = rng.normal(size=(k, k, cin, cout)).astype("float32")
    return x, kernel


@pytest.mark.parametrize("k,stride,padding,dilation,pad,filters", CASES)
def test_conv2d_values_match_numpy_and_keras(k, stride, padding, dilation, pad, filters):
    x, kernel = _data(k, cout=filters)
    got = ops.convert_to_numpy(conv2d(x, kernel, strides=stride, padding=padding, dilation_rate=dilation))
    keras_conv = ops.convert_to_numpy(
        ops.conv(x, kernel, strides=stride, padding=padding, dilation_rate=dilation)
    )
    np.testing.assert_allclose(got, keras_conv, rtol=1e-5, atol=1e-5)
    if pad is not None:
        want = ref.conv2d(x, kernel, stride=stride, pad=pad, dilation=dilation)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,stride,padding,dilation,pad,filters", CASES)
def test_conv2d_gradients_match_keras_conv(k, stride, padding, dilation, pad, filters):
    x, kernel = _data(k, seed=1, cout=filters)
    out_shape = ops.conv(x, kernel, strides=stride, padding=padding, dilation_rate=dilation).shape
    weights = np.random.default_rng(2).normal(size=out_shape).astype("float32")

    def loss(fn, wrt):
        def f(t):
            xx, kk = (t, kernel) if wrt == "x" else (x, t)
            y = fn(xx, kk, strides=stride, padding=padding, dilation_rate=dilation)
            return ops.sum(ops.multiply(y, weights))

        return f

    for wrt, arg in (("x", x), ("kernel", kernel)):
        _, got = value_and_grad(loss(conv2d, wrt), arg)
        _, want = value_and_grad(loss(ops.conv, wrt), arg)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"d/d{wrt}")


def test_layer_is_keras_conv2d_with_the_same_weights_and_outputs():
    x, _ = _data(3)
    ours = Conv2D(6, 3, padding="same", dilation_rate=2, name="c")
    theirs = keras.layers.Conv2D(6, 3, padding="same", dilation_rate=2, name="c")
    ours.build(x.shape)
    theirs.build(x.shape)
    assert [v.path for v in ours.weights] == [v.path for v in theirs.weights]
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(ours(x)), ops.convert_to_numpy(theirs(x)), rtol=1e-5, atol=1e-5
    )
    clone = Conv2D.from_config(ours.get_config())
    assert isinstance(clone, Conv2D) and clone.dilation_rate == (2, 2)


def test_layer_rejects_what_it_does_not_compute():
    with pytest.raises(ValueError, match="channels-last"):
        Conv2D(4, 3, data_format="channels_first")


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="memory layout of the torch path")
def test_torch_chain_stays_in_nchw_memory():
    # The point of the torch path: after the first convolution, activations live in NCHW memory
    # behind NHWC views, so the next convolution's input needs no copy.
    x, kernel = _data(3)
    y = conv2d(x, kernel, padding="same")
    y = ops.relu(ops.add(ops.multiply(y, 2.0), 1.0))
    z = conv2d(y, np.ones((1, 1, 4, 3), "float32"))
    for t in (y, z):
        assert t.shape[-1] < t.shape[1]  # NHWC shape ...
        assert t.permute(0, 3, 1, 2).is_contiguous()  # ... of NCHW memory


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="memory layout of the torch path")
def test_torch_kernels_gradients_and_optimizer_slots_live_in_oihw_memory(tmp_path):
    import torch

    from keras_fada.layers import FineGrainedDiscriminator
    from keras_fada.models import deeplabv2_resnet_small
    from keras_fada.optimizers import TorchAdam, TorchSGD

    def oihw(t):
        return t.permute(3, 2, 0, 1).is_contiguous()

    seg = deeplabv2_resnet_small(4)
    disc = FineGrainedDiscriminator(4, filters=(8, 8))
    disc.build((None, None, None, seg.feature_channels))
    x = np.random.default_rng(0).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    for model in (seg, disc):
        kernels = [v for v in model.trainable_weights if len(v.shape) == 4]
        assert kernels and all(oihw(k.value) for k in kernels)
        # The Parameters the model tracks (zero_grad, .parameters()) are the variables' own.
        assert {id(v.value) for v in model.trainable_weights} <= {id(p) for p in model.parameters()}
    # Weights read and written as HWIO arrays, as by checkpoints; the layout survives assign.
    kernel = seg.feature_extractor.get_layer("conv1").kernel
    hwio = np.arange(np.prod(kernel.shape), dtype="float32").reshape(kernel.shape)
    kernel.assign(hwio)
    np.testing.assert_array_equal(ops.convert_to_numpy(kernel), hwio)
    assert oihw(kernel.value)
    seg.save_weights(tmp_path / "seg.weights.h5")
    clone = deeplabv2_resnet_small(4)
    clone.load_weights(tmp_path / "seg.weights.h5")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone.feature_extractor.get_layer("conv1").kernel), hwio
    )
    # Gradients arrive in the weights' layout; zero_grad reaches them.
    for v in seg.trainable_weights:
        v.assign(ops.convert_to_numpy(v) * 1e-3)
    ops.sum(disc(seg.feature_extractor(x))).backward()
    for v in seg.feature_extractor.trainable_weights + disc.trainable_weights:
        assert v.value.grad is not None and v.value.grad.stride() == v.value.stride()
    seg.zero_grad()
    assert all(v.value.grad is None for v in seg.trainable_weights)
    # Optimiser slots take their weight's layout.
    sgd, adam = TorchSGD(0.1, momentum=0.9), TorchAdam(1e-3)
    sgd.build(seg.trainable_weights)
    adam.build(disc.trainable_weights)
    pairs = list(zip(seg.trainable_weights, sgd.momentums, strict=True))
    pairs += list(zip(disc.trainable_weights, adam._momentums, strict=True))
    pairs += list(zip(disc.trainable_weights, adam._velocities, strict=True))
    for weight, slot in pairs:
        assert slot.value.stride() == weight.value.stride()
    with torch.no_grad():
        before = ops.convert_to_numpy(kernel)
        sgd.apply([torch.ones(v.shape) for v in seg.trainable_weights], seg.trainable_weights)
    np.testing.assert_allclose(ops.convert_to_numpy(kernel), before - 0.1, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k,stride", [(1, 1), (1, 2), (3, 1)])
def test_conv2d_in_bfloat16_matches_float32_on_the_rounded_inputs(k, stride):
    # bfloat16 1x1 convolutions are GEMMs on TensorFlow; the reference is the float32
    # convolution of the same bf16-rounded inputs, so only the output rounding (2^-8) differs.
    x, kernel = _data(k, seed=3, cout=6)
    bias = np.random.default_rng(4).normal(size=(6,)).astype("float32")
    x, kernel, bias = (
        ops.convert_to_numpy(ops.cast(ops.cast(a, "bfloat16"), "float32")) for a in (x, kernel, bias)
    )
    padding = "same" if k == 3 else "valid"

    def run(dtype, wrt):
        def f(t):
            xx, kk = (t, kernel) if wrt == "x" else (x, t)
            y = conv2d(
                ops.cast(xx, dtype),
                ops.cast(kk, dtype),
                strides=stride,
                padding=padding,
                bias=ops.cast(bias, dtype),
            )
            assert keras.backend.standardize_dtype(y.dtype) == dtype
            return ops.sum(ops.multiply(ops.cast(y, "float32"), weights))

        return f

    weights = np.random.default_rng(5).normal(size=ops.conv(x, kernel, strides=stride, padding=padding).shape)
    weights = weights.astype("float32")
    want = ops.convert_to_numpy(ops.conv(x, kernel, strides=stride, padding=padding)) + bias
    got = ops.convert_to_numpy(
        ops.cast(
            conv2d(
                ops.cast(x, "bfloat16"),
                ops.cast(kernel, "bfloat16"),
                strides=stride,
                padding=padding,
                bias=ops.cast(bias, "bfloat16"),
            ),
            "float32",
        )
    )
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    for wrt, arg in (("x", x), ("kernel", kernel)):
        _, g_bf16 = value_and_grad(run("bfloat16", wrt), arg)
        _, g_f32 = value_and_grad(run("float32", wrt), arg)
        np.testing.assert_allclose(g_bf16, g_f32, rtol=2e-2, atol=2e-2 * np.abs(g_f32).max(), err_msg=wrt)


def _count_calls(monkeypatch, module, name):
    """Wraps ``module.name`` so that ``calls["n"]`` counts its calls: which route conv2d took."""
    calls = {"n": 0}
    original = getattr(module, name)

    def counted(*args):
        calls["n"] += 1
        return original(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("dilation", [1, 2])
def test_wide_convolution_as_one_gemm_matches_numpy_and_keras_gradients(dilation, monkeypatch):
    # From 1024 input channels a stride-1 "same" convolution is one GEMM plus shift-and-add on
    # TensorFlow (the discriminator's first convolution); JAX and torch keep their convolutions.
    import keras_fada.ops as kops

    calls = _count_calls(monkeypatch, kops, "_same_convolution_as_gemm")
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 5, 7, kops.WIDE_INPUT_CHANNELS)).astype("float32")
    kernel = (0.05 * rng.normal(size=(3, 3, kops.WIDE_INPUT_CHANNELS, 6))).astype("float32")
    got = ops.convert_to_numpy(conv2d(x, kernel, padding="same", dilation_rate=dilation))
    assert calls["n"] == (1 if keras.backend.backend() == "tensorflow" else 0)
    want = ref.conv2d(x, kernel, stride=1, pad=dilation, dilation=dilation)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    weights = rng.normal(size=want.shape).astype("float32")

    def loss(fn, wrt):
        def f(t):
            xx, kk = (t, kernel) if wrt == "x" else (x, t)
            return ops.sum(ops.multiply(fn(xx, kk, padding="same", dilation_rate=dilation), weights))

        return f

    for wrt, arg in (("x", x), ("kernel", kernel)):
        _, g = value_and_grad(loss(conv2d, wrt), arg)
        _, g_want = value_and_grad(loss(ops.conv, wrt), arg)
        np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-4 * np.abs(g_want).max(), err_msg=wrt)


@pytest.mark.parametrize(
    "cin,dilation,direct",
    [(5, 2, True), (256, 4, True), (257, 2, False), (5, 1, False)],
)
def test_dilated_convolution_runs_without_space_to_batch_up_to_256_channels(
    cin, dilation, direct, monkeypatch
):
    # TensorFlow's keras.ops.conv wraps a dilated convolution in space-to-batch; up to 256 input
    # channels (ResNet layer3) conv2d calls the dilated kernel directly. Values match either way.
    from keras_fada.backend import tensorflow_conv

    calls = _count_calls(monkeypatch, tensorflow_conv, "dilated_conv2d")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 9, 11, cin)).astype("float32")
    kernel = (rng.normal(size=(3, 3, cin, 3)) / np.sqrt(9 * cin)).astype("float32")
    got = ops.convert_to_numpy(conv2d(x, kernel, padding="same", dilation_rate=dilation))
    assert calls["n"] == (1 if direct and keras.backend.backend() == "tensorflow" else 0)
    want = ref.conv2d(x, kernel, stride=1, pad=dilation, dilation=dilation)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
