"""DeepLabV2 segmentors: equality with PyTorch networks of the official layout, parameter counts,
frozen/trainable BN under fit, input normalisation, serialisation."""

import weakref

import keras
import numpy as np
import pytest

from keras_fada.layers import FineGrainedDiscriminator
from keras_fada.models import (
    ASPPClassifier,
    FrozenBatchNormalization,
    Segmentor,
    deeplabv2_resnet,
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    deeplabv2_vgg,
    deeplabv2_vgg16,
)
from keras_fada.models.deeplabv2 import FeatureExtractor, load_state_dict
from keras_fada.models.deeplabv2.normalization import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD
from tests.support import numpy_reference

# Small ResNet: 2 blocks in the dilated stages so that both "first block keeps the previous dilation"
# and the dilation-2/4 blocks are exercised; odd input size so that padding mistakes show.
BLOCKS, WIDTHS = (1, 2, 2, 2), (8, 16, 16, 32)
VGG_WIDTHS, VGG_FC = (4, 8, 8, 16, 16), 32
H, W = 65, 97


def _close(keras_out, torch_out, tol=1e-4):
    keras_out = keras.ops.convert_to_numpy(keras_out)
    assert keras_out.shape == torch_out.shape
    scale = max(1.0, float(np.abs(torch_out).max()))
    err = float(np.abs(keras_out - torch_out).max())
    assert err <= tol * scale, f"max |keras - torch| = {err} (output scale {scale})"


def _images(seed=0, n=1):
    return np.random.default_rng(seed).normal(size=(n, H, W, 3)).astype("float32")


def _n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_small_resnet_matches_torch(frozen_bn):
    pytest.importorskip("torch")
    from tests.support import official_torch_nets as ref

    backbone = ref.randomize(ref.ResNet(BLOCKS, WIDTHS, frozen_bn=frozen_bn), seed=1)
    fe_t = ref.FeatureExtractor(backbone)
    cls_t = ref.randomize(ref.ASPPClassifierV2(WIDTHS[-1] * 4, 5), seed=2)
    disc_t = ref.randomize(ref.PixelDiscriminator(WIDTHS[-1] * 4, ndf=32, num_classes=5), seed=3)
    checkpoint = {
        "iteration": 10,
        "feature_extractor": ref.state_dict_numpy(fe_t, prefix="module."),
        "classifier": ref.state_dict_numpy(cls_t, prefix="module."),
        "model_D": ref.state_dict_numpy(disc_t, prefix="module."),
    }
    g = deeplabv2_resnet(5, blocks=BLOCKS, widths=WIDTHS, frozen_bn=frozen_bn, normalize_inputs=False)
    disc = FineGrainedDiscriminator(5, filters=(32, 16))
    n = load_state_dict(g, checkpoint, discriminator=disc)
    assert n == len(g.weights) + len(disc.weights)

    x = _images()
    feats_t = ref.run(fe_t, x)
    assert feats_t.shape == (1, 9, 13, WIDTHS[-1] * 4)
    feats = g.feature_extractor(x, training=False)
    _close(feats, feats_t)
    _close(g(x, training=False), ref.run(cls_t, feats_t))
    _close(disc(feats_t), ref.run(disc_t, feats_t))


def test_vgg_matches_torch():
    pytest.importorskip("torch")
    from tests.support import official_torch_nets as ref

    fe_t = ref.FeatureExtractor(ref.randomize(ref.vgg_backbone(VGG_WIDTHS, VGG_FC), seed=4))
    cls_t = ref.randomize(ref.ASPPClassifierV2(VGG_FC, 3), seed=5)
    checkpoint = {
        "feature_extractor": ref.state_dict_numpy(fe_t),
        "classifier": ref.state_dict_numpy(cls_t),
    }
    g = deeplabv2_vgg(3, widths=VGG_WIDTHS, fc_width=VGG_FC, normalize_inputs=False)
    load_state_dict(g, checkpoint)
    x = _images(seed=1)
    feats_t = ref.run(fe_t, x)
    assert feats_t.shape == (1, 8, 12, VGG_FC)  # three floor-mode 2x2 pools: 65 -> 8, 97 -> 12
    _close(g.feature_extractor(x), feats_t)
    _close(g(x), ref.run(cls_t, feats_t))


def test_aspp_and_discriminator_match_torch_alone():
    pytest.importorskip("torch")
    from keras_fada.models.deeplabv2.weights import _Plan, classifier_variables, discriminator_variables
    from tests.support import official_torch_nets as ref

    cls_t = ref.randomize(ref.ASPPClassifierV2(24, 7), seed=6)
    disc_t = ref.randomize(ref.PixelDiscriminator(24, ndf=16, num_classes=7), seed=7)
    aspp = ASPPClassifier(7)
    disc = FineGrainedDiscriminator(7, filters=(16, 8))
    aspp.build((None, None, None, 24))
    disc.build((None, None, None, 24))
    plan = _Plan()
    plan.match("classifier", classifier_variables(aspp), ref.state_dict_numpy(cls_t))
    plan.match("model_D", discriminator_variables(disc), ref.state_dict_numpy(disc_t))
    plan.apply()
    x = np.random.default_rng(2).normal(size=(2, 29, 31, 24)).astype("float32")  # smaller than dilation 24
    _close(aspp(x), ref.run(cls_t, x))
    _close(disc(x), ref.run(disc_t, x))


# Dilations up to the map's size: at 9x13 the vertical taps of dilations 12 and 24 and every
# off-centre tap of 24 fall outside the map and are dropped; the centre taps are shared.
ASPP_DILATIONS = (2, 6, 12, 24)


def _aspp_case(seed=0):
    rng = np.random.default_rng(seed)
    aspp = ASPPClassifier(5, dilations=ASPP_DILATIONS, kernel_stddev=0.3)
    aspp.build((None, None, None, 6))
    for conv in aspp.conv2d_list:
        conv.bias.assign(rng.normal(size=conv.bias.shape).astype("float32"))
    x = rng.normal(size=(2, 9, 13, 6)).astype("float32")
    return aspp, x


def _four_convolutions(aspp, variables, x):
    """The official definition: four dilated convolutions (``keras.ops.conv``), summed."""
    out = 0
    for conv, d in zip(aspp.conv2d_list, ASPP_DILATIONS, strict=True):
        kernel, bias = (keras.ops.convert_to_tensor(variables[id(v)]) for v in (conv.kernel, conv.bias))
        y = keras.ops.conv(keras.ops.convert_to_tensor(x), kernel, padding="same", dilation_rate=d)
        out = keras.ops.add(out, keras.ops.add(y, bias))
    return out


def test_aspp_one_gemm_matches_numpy_dilated_convolutions():
    aspp, x = _aspp_case()
    want = sum(
        numpy_reference.conv3x3_same(
            x, keras.ops.convert_to_numpy(c.kernel), keras.ops.convert_to_numpy(c.bias), d
        )
        for c, d in zip(aspp.conv2d_list, ASPP_DILATIONS, strict=True)
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(aspp(x)), want, rtol=1e-5, atol=1e-5)


def test_aspp_one_gemm_gradients_match_four_convolutions():
    """d/dx and d/d(every kernel and bias) of the one-GEMM ASPP against keras.ops.conv's."""
    from tests.support.backend_utils import value_and_grad

    aspp, x = _aspp_case(seed=1)
    weights = np.random.default_rng(2).normal(size=(2, 9, 13, 5)).astype("float32")
    variables = aspp.trainable_variables
    values = [keras.ops.convert_to_numpy(v) for v in variables]

    def loss(fn, index):
        def f(t):
            vals = [t if i == index else v for i, v in enumerate(values)]
            inputs = t if index is None else x
            if fn == "ours":
                y, _ = aspp.stateless_call(vals, [], inputs)
            else:
                y = _four_convolutions(aspp, dict(zip(map(id, variables), vals, strict=True)), inputs)
            return keras.ops.sum(keras.ops.multiply(y, weights))

        return f

    for index in [None, *range(len(variables))]:
        arg = x if index is None else values[index]
        name = "x" if index is None else variables[index].path
        _, got = value_and_grad(loss("ours", index), arg)
        _, want = value_and_grad(loss("convs", index), arg)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"d/d{name}")


def test_aspp_without_static_map_size_sums_the_convolutions():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("symbolic spatial dimensions at run time exist on TensorFlow only")
    aspp, x = _aspp_case(seed=3)
    dynamic = tf.function(aspp.call, input_signature=[tf.TensorSpec((None, None, None, 6))])
    np.testing.assert_allclose(dynamic(x).numpy(), aspp(x).numpy(), rtol=1e-5, atol=1e-5)


def test_aspp_init_and_shape():
    aspp = ASPPClassifier(19)
    out = aspp(keras.ops.zeros((1, 9, 13, 64)))
    assert tuple(out.shape) == (1, 9, 13, 19)
    assert [c.dilation_rate for c in aspp.conv2d_list] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    kernels = np.concatenate([keras.ops.convert_to_numpy(c.kernel).ravel() for c in aspp.conv2d_list])
    assert abs(kernels.std() - 0.01) < 0.001
    assert all(c.use_bias for c in aspp.conv2d_list)


def test_frozen_batch_norm_formula_has_no_epsilon():
    bn = FrozenBatchNormalization()
    bn.build((None, 4))
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.0, 1.0, -1.0, 0.5])
    mean, var = np.array([0.1, -0.2, 0.0, 3.0]), np.array([1e-6, 4.0, 0.25, 1.0])
    variables = (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    for v, value in zip(variables, (gamma, beta, mean, var), strict=True):
        v.assign(value.astype("float32"))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    expected = x * gamma / np.sqrt(var) + (beta - mean * gamma / np.sqrt(var))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn(x)), expected, rtol=1e-5, atol=1e-5)
    assert bn.trainable_weights == [] and len(bn.non_trainable_weights) == 4


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
def test_input_normalisation_is_applied_once(kind):
    rgb = np.random.default_rng(3).uniform(0, 255, size=(1, 33, 41, 3)).astype("float32")
    if kind == "resnet":
        build = lambda norm: deeplabv2_resnet_small(4, normalize_inputs=norm)  # noqa: E731
        normalised = (rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    else:
        build = lambda norm: deeplabv2_vgg(4, VGG_WIDTHS, VGG_FC, normalize_inputs=norm)  # noqa: E731
        normalised = rgb[..., ::-1] - np.array(CAFFE_BGR_MEAN)
    with_norm, without = build(True), build(False)
    without.set_weights(with_norm.get_weights())
    a = keras.ops.convert_to_numpy(with_norm.feature_extractor(rgb))
    b = keras.ops.convert_to_numpy(without.feature_extractor(normalised.astype("float32")))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


def test_resnet101_parameter_counts():
    g = deeplabv2_resnet101(num_classes=19)
    fe = g.feature_extractor
    # Official (torch_fada_step.py --mode params): 42,394,816 conv weights, 104 FrozenBN x 4 buffers.
    assert _n_params(fe.trainable_weights) == 42_394_816
    assert _n_params(fe.non_trainable_weights) == 210_688
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in fe.layers)
    assert fe.output.shape[-1] == 2048
    assert _n_params(g.classifier.trainable_weights) == 1_400_908
    disc = FineGrainedDiscriminator(19)
    disc.build((None, None, None, 2048))
    assert disc.count_params() == 5_057_702
    # Frozen BN stays out of the trainable set even when everything is set trainable.
    g.trainable = True
    assert _n_params(g.trainable_weights) == 42_394_816 + 1_400_908


def test_resnet101_trainable_bn_parameter_counts():
    fe = deeplabv2_resnet101(num_classes=19, frozen_bn=False).feature_extractor
    assert _n_params(fe.trainable_weights) == 42_394_816 + 105_344  # + BN gamma/beta
    assert _n_params(fe.non_trainable_weights) == 105_344  # moving mean/var


def test_vgg16_parameter_counts():
    g = deeplabv2_vgg16(num_classes=19)
    # torchvision vgg16.features (14,714,688) + fc6 (4,719,616) + fc7 (9,438,208).
    assert _n_params(g.feature_extractor.trainable_weights) == 28_872_512
    assert g.feature_extractor.non_trainable_weights == []
    assert g.feature_extractor.output.shape[-1] == 1024
    assert _n_params(g.classifier.trainable_weights) == 700_492  # 4 x (1024*19*9 + 19)
    disc = FineGrainedDiscriminator(19)
    disc.build((None, None, None, 1024))
    assert disc.count_params() == 2_698_406


def test_resnet_structure_matches_official_layout():
    fe = deeplabv2_resnet(19, blocks=(3, 4, 6, 3), widths=(2, 2, 4, 8)).feature_extractor
    convs = {layer.name: layer for layer in fe.layers if isinstance(layer, keras.layers.Conv2D)}
    assert convs["conv1"].strides == (2, 2) and convs["conv1"].padding == "valid"
    assert convs["layer2_0_conv2"].strides == (2, 2) and convs["layer2_0_conv1"].strides == (1, 1)
    assert convs["layer2_0_downsample_0"].strides == (2, 2)
    assert convs["layer3_0_conv2"].dilation_rate == (1, 1) and convs["layer3_0_conv2"].strides == (1, 1)
    assert convs["layer3_0_downsample_0"].strides == (1, 1)
    assert all(convs[f"layer3_{i}_conv2"].dilation_rate == (2, 2) for i in range(1, 6))
    assert convs["layer4_0_conv2"].dilation_rate == (2, 2)
    assert all(convs[f"layer4_{i}_conv2"].dilation_rate == (4, 4) for i in range(1, 3))
    assert "layer1_0_downsample_0" in convs and "layer1_1_downsample_0" not in convs
    assert tuple(fe(np.zeros((1, 65, 97, 3), "float32")).shape) == (1, 9, 13, 32)


def _fit_two_steps(g):
    g.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 33, 41, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(2, 5, 6)).astype("int32")
    g.fit(x, y, batch_size=2, epochs=2, verbose=0)


def test_frozen_bn_stays_frozen_through_fit():
    g = deeplabv2_resnet_small(3)
    rng = np.random.default_rng(0)
    frozen = [layer for layer in g.feature_extractor.layers if isinstance(layer, FrozenBatchNormalization)]
    assert len(frozen) == 1 + 4 * 3 + 4  # stem + 3 per block + one downsample BN per stage
    for layer in frozen:
        for v in layer.weights:
            v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32"))
    before = [keras.ops.convert_to_numpy(v).copy() for layer in frozen for v in layer.weights]
    conv_before = keras.ops.convert_to_numpy(g.feature_extractor.get_layer("conv1").kernel).copy()
    g.trainable = True
    frozen_ids = {id(v) for layer in frozen for v in layer.weights}
    assert not frozen_ids & {id(v) for v in g.trainable_weights}
    _fit_two_steps(g)
    after = [keras.ops.convert_to_numpy(v) for layer in frozen for v in layer.weights]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    conv_after = keras.ops.convert_to_numpy(g.feature_extractor.get_layer("conv1").kernel)
    assert not np.allclose(conv_before, conv_after)


def test_trainable_bn_updates_through_fit():
    g = deeplabv2_resnet_small(3, frozen_bn=False)
    bn = g.feature_extractor.get_layer("layer2_0_bn2")
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9
    mean0 = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    gamma0 = keras.ops.convert_to_numpy(bn.gamma).copy()
    _fit_two_steps(g)
    assert not np.allclose(mean0, keras.ops.convert_to_numpy(bn.moving_mean))
    assert not np.allclose(gamma0, keras.ops.convert_to_numpy(bn.gamma))


def test_keras_save_load_round_trip(tmp_path):
    g = deeplabv2_resnet_small(4)
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 65, 97, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(g(x))
    path = tmp_path / "segmentor.keras"
    g.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, Segmentor)
    assert isinstance(restored.classifier, ASPPClassifier)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored.feature_extractor(x)),
        keras.ops.convert_to_numpy(g.feature_extractor(x)),
        rtol=1e-5,
        atol=1e-5,
    )


_PROBE = {"refs": [], "alive": None}


class _Probe(keras.layers.Layer):
    """Doubles its input; records which earlier probes' inputs are still alive when it runs."""

    def call(self, x):
        _PROBE["alive"] = [ref() is not None for ref in _PROBE["refs"]]
        _PROBE["refs"].append(weakref.ref(x))
        return x * 2.0


@pytest.mark.parametrize("model_class, released", [(keras.Model, False), (FeatureExtractor, True)])
def test_feature_extractor_releases_intermediate_tensors(model_class, released):
    # Eager call of a 4-layer chain: when the last layer runs, the outputs of the first two
    # layers have had their only consumers. keras.Model still holds them (the control);
    # FeatureExtractor has let them go, and computes the same values.
    inputs = keras.Input((4,))
    x = inputs
    for i in range(4):
        x = _Probe(name=f"probe_{i}")(x)
    model = model_class(inputs, x)
    _PROBE["refs"] = []
    out = model(np.ones((1, 4), "float32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), np.full((1, 4), 16.0))
    assert _PROBE["alive"] == [True, not released, not released]  # the model input stays with the caller


def test_backbones_are_feature_extractors_and_round_trip(tmp_path):
    for fe in (
        deeplabv2_resnet(4, blocks=BLOCKS, widths=WIDTHS).feature_extractor,
        deeplabv2_vgg(4, widths=VGG_WIDTHS, fc_width=VGG_FC).feature_extractor,
    ):
        assert isinstance(fe, FeatureExtractor)
        x = _images()
        path = tmp_path / f"{fe.name}.keras"
        fe.save(path)
        restored = keras.saving.load_model(path)
        assert isinstance(restored, FeatureExtractor)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(fe(x)), rtol=1e-5, atol=1e-5
        )


def test_official_initialisations():
    fe = deeplabv2_resnet_small(3).feature_extractor
    kernel = keras.ops.convert_to_numpy(fe.get_layer("layer4_0_conv2").kernel)  # (3, 3, 64, 64)
    assert abs(kernel.std() - np.sqrt(2.0 / (9 * 64))) < 0.05 * np.sqrt(2.0 / (9 * 64))  # kaiming fan_out
    vgg = deeplabv2_vgg(3, VGG_WIDTHS, VGG_FC).feature_extractor
    fc7 = keras.ops.convert_to_numpy(vgg.get_layer("fc7").kernel)
    bound = 1.0 / np.sqrt(9 * VGG_FC)
    assert np.abs(fc7).max() <= bound and np.abs(fc7).max() > 0.9 * bound  # torch default U(+-1/sqrt(fan_in))
    keras.utils.set_random_seed(7)
    a = keras.ops.convert_to_numpy(deeplabv2_resnet_small(3).classifier.conv2d_list[0].kernel)
    keras.utils.set_random_seed(7)
    b = keras.ops.convert_to_numpy(deeplabv2_resnet_small(3).classifier.conv2d_list[0].kernel)
    np.testing.assert_array_equal(a, b)


def test_relu_keeps_values_and_gradients():
    from keras_fada.layers import ReLU

    # Normal floats only: XLA's CPU arithmetic flushes subnormals to zero, this division included.
    x = np.array([[0.0, -0.0, 1.5, -2.25, 3.0e38, 1.2e-38, -7.0]], "float32")
    weights = keras.ops.convert_to_tensor(np.arange(1, 8, dtype="float32"))
    relu = ReLU()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(relu(x)), np.maximum(x, 0))
    grad = _gradient(lambda t: keras.ops.sum(keras.ops.multiply(relu(t), weights)), x)
    np.testing.assert_array_equal(grad, np.where(x > 0, np.arange(1, 8, dtype="float32"), 0))
    # Other forms are keras.layers.ReLU's.
    leaky = ReLU(negative_slope=0.5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(leaky(x[:, :4])), [[0.0, 0.0, 1.5, -1.125]])


def _gradient(f, x):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(f)(x))
    if backend == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        f(t).backward()
        return t.grad.numpy()
    import tensorflow as tf

    t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(t)
        y = f(t)
    return tape.gradient(y, t).numpy()


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA's CPU fusion")
def test_residual_stream_is_computed_once_per_block_under_xla():
    """XLA's CPU fusion recomputed every earlier block's residual stream inside each block's output,
    and kept every pre-activation's inputs for the ReLU gradients; ``keras_fada.layers.ReLU``
    stops both. Checked on the compiled gradient of residual chains of 3 and 12 blocks: the
    widest fusion must not read more full-size tensors in the deeper chain (with a plain ReLU it
    reads about one per block), and the program needs less temporary memory."""
    import re

    import jax

    from keras_fada.layers import ReLU

    def compile_chain(relu, blocks):
        def chain(weights, x):
            out = x
            for w in weights:
                out = relu(keras.ops.matmul(keras.ops.relu(keras.ops.matmul(out, w)), w.T) * 0.5 + out)
            return keras.ops.sum(out * out)

        rng = np.random.default_rng(0)
        weights = [rng.normal(0, 0.1, (64, 16)).astype("float32") for _ in range(blocks)]
        x = rng.normal(size=(256, 64)).astype("float32")
        compiled = jax.jit(jax.grad(chain)).lower(weights, x).compile()
        signatures = re.findall(r"\n%fused_computation[\w.\-]* \(([^)]*)\)", compiled.as_text())
        widest = max(s.count("f32[256,64]") for s in signatures)
        return widest, compiled.memory_analysis().temp_size_in_bytes

    (ours, ours_temp), (shallow, _) = compile_chain(ReLU(), 12), compile_chain(ReLU(), 3)
    plain, plain_temp = compile_chain(keras.layers.ReLU(), 12)
    assert ours == shallow <= 4
    assert ours_temp < plain_temp
    # The failure it prevents (if XLA stops duplicating, this workaround can go):
    assert plain >= 12


def _with_random_frozen_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, FrozenBatchNormalization):
            c = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(size=c))
            layer.moving_mean.assign(0.1 * rng.normal(size=c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    return model


def _count_in_place(monkeypatch):
    """On torch, counts the in-place layer computations that actually ran."""
    counts = {"affine_": 0, "relu_": 0, "add_": 0}
    if keras.backend.backend() != "torch":
        return counts
    from keras_fada.backend import torch_in_place

    for name in counts:
        original = getattr(torch_in_place, name)

        def counted(*args, _original=original, _name=name):
            out = _original(*args)
            counts[_name] += out is not None
            return out

        monkeypatch.setattr(torch_in_place, name, counted)
    return counts


@pytest.mark.parametrize("net", ["resnet", "vgg"])
def test_in_place_layers_keep_values_and_gradients(net, monkeypatch):
    # On torch, FeatureExtractor lets frozen BN, ReLU and Add overwrite an input nothing else reads;
    # keras.Model over the same layers (the control) never does. Outputs, input gradients and
    # (torch) every kernel's gradient must be bitwise equal (so no BatchNorm folding here).
    from keras_fada.layers import Add, ReLU
    from tests.support.backend_utils import value_and_grad

    monkeypatch.setattr(FeatureExtractor, "fold_frozen_batch_norm", False)

    if net == "resnet":
        fe = deeplabv2_resnet(4, blocks=BLOCKS, widths=WIDTHS, normalize_inputs=False).feature_extractor
    else:
        fe = deeplabv2_vgg(4, widths=VGG_WIDTHS, fc_width=VGG_FC).feature_extractor
    fe = _with_random_frozen_statistics(fe)
    # Every such layer of these backbones is the only reader of its first input.
    expected = {
        name: sum(isinstance(layer, cls) for layer in fe.layers)
        for name, cls in (("affine_", FrozenBatchNormalization), ("relu_", ReLU), ("add_", Add))
    }
    assert expected["relu_"] > 0
    control = keras.Model(fe.input, fe.output)
    x = _images(seed=5, n=2)
    weights = np.random.default_rng(6).normal(size=fe(x).shape).astype("float32")
    counts = _count_in_place(monkeypatch)

    def loss(model):
        return lambda t: keras.ops.sum(keras.ops.multiply(model(t, training=True), weights))

    y_ours, g_ours = value_and_grad(loss(fe), x)
    if keras.backend.backend() == "torch":
        assert counts == expected
    y_control, g_control = value_and_grad(loss(control), x)
    np.testing.assert_array_equal(y_ours, y_control)
    np.testing.assert_array_equal(g_ours, g_control)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fe(x, training=True)),
        keras.ops.convert_to_numpy(control(x, training=True)),
    )
    if keras.backend.backend() == "torch":
        grads = {}
        for name, model in (("ours", fe), ("control", control)):
            for v in model.trainable_variables:
                v.value.grad = None
            loss(model)(keras.ops.convert_to_tensor(x)).backward()
            grads[name] = [v.value.grad.numpy().copy() for v in model.trainable_variables]
        assert len(grads["ours"]) == len(fe.trainable_variables) > 0
        for a, b in zip(grads["ours"], grads["control"], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["second_reader", "alias"])
def test_in_place_layers_never_overwrite_a_tensor_read_later(case, monkeypatch):
    # second_reader: the ReLU reads `conv` first, the Add reads it after, so the ReLU may not
    # overwrite it. alias: Identity returns its input, so `alias` and `conv` are one buffer; the
    # ReLU is the last reader of `alias` but the Add still reads `conv`.
    from keras_fada.layers import Add, Conv2D, ReLU

    inputs = keras.Input((6, 7, 3))
    conv = Conv2D(4, 3, padding="same")(inputs)
    relu_input = keras.layers.Identity()(conv) if case == "alias" else conv
    out = Add()([ReLU()(relu_input), conv])
    fe = FeatureExtractor(inputs, out)
    counts = _count_in_place(monkeypatch)
    x = np.random.default_rng(7).normal(size=(2, 6, 7, 3)).astype("float32")
    conv_out = keras.ops.convert_to_numpy(keras.Model(inputs, conv)(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fe(x)), np.maximum(conv_out, 0) + conv_out)
    if keras.backend.backend() == "torch":
        assert counts == {"affine_": 0, "relu_": 0, "add_": 1}  # the Add may overwrite the ReLU output


def _folding_case(monkeypatch, fe):
    from keras_fada.layers import Conv2D

    monkeypatch.setattr(FeatureExtractor, "fold_frozen_batch_norm", True)
    calls = {"n": 0}
    original = Conv2D.call_scaled

    def counted(self, *args):
        calls["n"] += 1
        return original(self, *args)

    monkeypatch.setattr(Conv2D, "call_scaled", counted)
    return calls


def test_frozen_batch_norm_folds_into_the_convolution(monkeypatch):
    """conv(x, W) * s + b run as conv(x, W * s) + b: the values, the input gradient and every
    kernel's gradient are those of keras.Model over the same layers (the control), on every
    backend, and every BatchNorm of the ResNet body is folded."""
    from tests.support.backend_utils import value_and_grads

    fe = deeplabv2_resnet(4, blocks=BLOCKS, widths=WIDTHS, normalize_inputs=False).feature_extractor
    fe = _with_random_frozen_statistics(fe)
    calls = _folding_case(monkeypatch, fe)
    batch_norms = [layer for layer in fe.layers if isinstance(layer, FrozenBatchNormalization)]
    assert len(fe.folded_batch_norms()) == len(batch_norms) > 0
    control = keras.Model(fe.input, fe.output)
    x = _images(seed=5, n=2)
    trainable = [keras.ops.convert_to_numpy(v) for v in fe.trainable_variables]
    frozen = [keras.ops.convert_to_numpy(v) for v in fe.non_trainable_variables]
    weights = np.random.default_rng(6).normal(size=fe(x).shape).astype("float32")

    def loss(model):
        def f(t, *values):
            y, _ = model.stateless_call(list(values), frozen, t, training=True)
            return keras.ops.sum(keras.ops.multiply(y, weights))

        return f

    calls["n"] = 0
    y_ours, g_ours = value_and_grads(loss(fe), [x, *trainable])
    assert calls["n"] == len(batch_norms)
    y_control, g_control = value_and_grads(loss(control), [x, *trainable])
    np.testing.assert_allclose(y_ours, y_control, rtol=1e-5)
    names = ["x", *(v.path for v in fe.trainable_variables)]
    for name, got, want in zip(names, g_ours, g_control, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=name)
    out, want = (keras.ops.convert_to_numpy(m(x, training=True)) for m in (fe, control))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_frozen_batch_norm_is_not_folded_when_the_convolution_has_another_reader(monkeypatch):
    from keras_fada.layers import Add, Conv2D

    inputs = keras.Input((6, 7, 3))
    conv = Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    single = Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    out = Add()([FrozenBatchNormalization()(conv), conv, FrozenBatchNormalization()(single)])
    fe = _with_random_frozen_statistics(FeatureExtractor(inputs, out))
    calls = _folding_case(monkeypatch, fe)
    assert len(fe.folded_batch_norms()) == 1  # only the BatchNorm of `single`
    x = np.random.default_rng(8).normal(size=(2, 6, 7, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(fe(x))
    assert calls["n"] == 1
    np.testing.assert_allclose(
        got, keras.ops.convert_to_numpy(keras.Model(inputs, out)(x)), rtol=1e-5, atol=1e-5
    )
