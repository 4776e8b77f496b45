"""Checkpoint import: official key names and shapes, error reporting, file formats, .weights.h5."""

import json
import struct

import keras
import numpy as np
import pytest

from keras_fada.layers import FineGrainedDiscriminator
from keras_fada.models import (
    convert_checkpoint,
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    deeplabv2_vgg16,
    load_torch_weights,
)
from keras_fada.models.deeplabv2 import load_state_dict, read_checkpoint
from keras_fada.models.deeplabv2.weights import read_safetensors

K = 19


# ----------------------------------------------------------------------------------------------------
# Official names and shapes, written from the official/torchvision layout (not from keras-fada's code)
# ----------------------------------------------------------------------------------------------------
def _bn(sd, prefix, n, counter=False):
    for name in ("weight", "bias", "running_mean", "running_var"):
        sd[f"{prefix}.{name}"] = (n,)
    if counter:
        sd[f"{prefix}.num_batches_tracked"] = ()


def resnet_shapes(blocks=(3, 4, 23, 3), widths=(64, 128, 256, 512), counter=False):
    """torchvision resnet101 state-dict shapes without fc (counter: trainable-BN num_batches_tracked)."""
    sd = {"conv1.weight": (widths[0], 3, 7, 7)}
    _bn(sd, "bn1", widths[0], counter)
    inplanes = widths[0]
    for layer, (n, w) in enumerate(zip(blocks, widths, strict=True), start=1):
        for i in range(n):
            p = f"layer{layer}.{i}"
            sd[f"{p}.conv1.weight"] = (w, inplanes if i == 0 else 4 * w, 1, 1)
            _bn(sd, f"{p}.bn1", w, counter)
            sd[f"{p}.conv2.weight"] = (w, w, 3, 3)
            _bn(sd, f"{p}.bn2", w, counter)
            sd[f"{p}.conv3.weight"] = (4 * w, w, 1, 1)
            _bn(sd, f"{p}.bn3", 4 * w, counter)
            if i == 0:
                sd[f"{p}.downsample.0.weight"] = (4 * w, inplanes, 1, 1)
                _bn(sd, f"{p}.downsample.1", 4 * w, counter)
        inplanes = 4 * w
    return sd


VGG_TORCHVISION_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG_OFFICIAL_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 23, 25, 27]
VGG_CHANNELS = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def vgg_shapes(indices):
    sd = {}
    for j, idx in enumerate(indices):
        sd[f"{idx}.weight"] = (VGG_CHANNELS[j + 1], VGG_CHANNELS[j], 3, 3)
        sd[f"{idx}.bias"] = (VGG_CHANNELS[j + 1],)
    return sd


def head_shapes(in_channels, k=K):
    cls = {}
    for i in range(4):
        cls[f"conv2d_list.{i}.weight"] = (k, in_channels, 3, 3)
        cls[f"conv2d_list.{i}.bias"] = (k,)
    disc = {"D.0.weight": (256, in_channels, 3, 3), "D.0.bias": (256,), "D.2.weight": (128, 256, 3, 3)}
    disc.update({"D.2.bias": (128,), "cls1.weight": (k, 128, 3, 3), "cls1.bias": (k,)})
    disc.update({"cls2.weight": (k, 128, 3, 3), "cls2.bias": (k,)})
    return cls, disc


def zeros(shapes, prefix="", fill=0.0):
    return {prefix + k: np.full(s, fill, dtype="float32") for k, s in shapes.items()}


def fada_checkpoint(fe_shapes, in_channels, prefix="module."):
    cls, disc = head_shapes(in_channels)
    return {
        "iteration": 18000,
        "feature_extractor": zeros(fe_shapes, prefix + "backbone."),
        "classifier": zeros(cls, prefix),
        "model_D": zeros(disc, prefix),
        "optimizer_fea": {"state": {}, "param_groups": []},
    }


@pytest.fixture(scope="module")
def r101():
    g = deeplabv2_resnet101(K)
    disc = FineGrainedDiscriminator(K)
    disc.build((None, None, None, 2048))
    return g, disc


def _value(variable):
    return keras.ops.convert_to_numpy(variable)


# ----------------------------------------------------------------------------------------------------
# Full-size networks: key/shape mapping (no forward pass)
# ----------------------------------------------------------------------------------------------------
def test_resnet101_fada_checkpoint_maps_every_key(r101):
    g, disc = r101
    checkpoint = fada_checkpoint(resnet_shapes(), 2048)
    assert len(checkpoint["feature_extractor"]) == 520
    n = load_state_dict(g, checkpoint, discriminator=disc)
    assert n == 520 + 8 + 8 == len(g.weights) + len(disc.weights)
    assert all(np.all(_value(v) == 0) for v in g.weights + disc.weights)


def test_resnet101_imagenet_fills_only_the_feature_extractor(r101):
    g, _ = r101
    shapes = resnet_shapes(counter=True)
    shapes.update({"fc.weight": (1000, 2048), "fc.bias": (1000,)})
    state = zeros(shapes, fill=1.0)
    state = {k: (v.astype("int64") if k.endswith("num_batches_tracked") else v) for k, v in state.items()}
    classifier_before = [_value(v).copy() for v in g.classifier.weights]
    n = load_state_dict(g, state)  # auto-detected as ImageNet
    assert n == 520
    assert all(np.all(_value(v) == 1) for v in g.feature_extractor.weights)
    for before, v in zip(classifier_before, g.classifier.weights, strict=True):
        np.testing.assert_array_equal(before, _value(v))


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda sd: sd.pop("backbone.layer3.17.bn2.running_var"),
            "feature_extractor:backbone.layer3.17.bn2.running_var",
        ),
        (
            lambda sd: sd.update({"backbone.layer5.0.conv1.weight": np.zeros((1,))}),
            "backbone.layer5.0.conv1.weight",
        ),
        (
            lambda sd: sd.update({"backbone.layer4.2.conv2.weight": np.zeros((512, 512, 1, 3), "float32")}),
            "backbone.layer4.2.conv2.weight: checkpoint (512, 512, 1, 3) vs Keras (512, 512, 3, 3)",
        ),
    ],
    ids=["missing", "extra", "misshaped"],
)
def test_mismatch_is_reported_by_name_and_nothing_is_loaded(r101, edit, expected):
    g, disc = r101
    checkpoint = fada_checkpoint(resnet_shapes(), 2048, prefix="")
    for sd in (checkpoint["feature_extractor"], checkpoint["classifier"]):
        for k in sd:
            sd[k] = sd[k] + 2.0
    edit(checkpoint["feature_extractor"])
    before = _value(g.feature_extractor.get_layer("conv1").kernel).copy()
    with pytest.raises(ValueError, match="nothing was loaded") as info:
        load_state_dict(g, checkpoint, discriminator=disc)
    assert expected in str(info.value)
    np.testing.assert_array_equal(before, _value(g.feature_extractor.get_layer("conv1").kernel))


def test_wrong_number_of_classes_is_reported(r101):
    g, _ = r101
    checkpoint = fada_checkpoint(resnet_shapes(), 2048)
    checkpoint["classifier"]["module.conv2d_list.2.bias"] = np.zeros((16,), "float32")
    with pytest.raises(ValueError, match=r"classifier:module.conv2d_list.2.bias|conv2d_list.2.bias"):
        load_state_dict(g, checkpoint)


def test_checkpoint_without_discriminator_section_is_an_error_when_one_is_asked_for(r101):
    g, disc = r101
    checkpoint = fada_checkpoint(resnet_shapes(), 2048)
    del checkpoint["model_D"]
    load_state_dict(g, checkpoint)  # source-only checkpoint into G alone: fine
    with pytest.raises(ValueError, match="model_D"):
        load_state_dict(g, checkpoint, discriminator=disc)


def test_vgg16_fada_and_imagenet_mappings():
    g = deeplabv2_vgg16(K)
    disc = FineGrainedDiscriminator(K)
    fe_shapes = vgg_shapes(VGG_OFFICIAL_CONVS)
    fe_shapes.update({"29.weight": (1024, 512, 3, 3), "29.bias": (1024,)})
    fe_shapes.update({"31.weight": (1024, 1024, 3, 3), "31.bias": (1024,)})
    assert load_state_dict(g, fada_checkpoint(fe_shapes, 1024), discriminator=disc) == 30 + 8 + 8

    # The Caffe-converted vgg16-00b39a1b.pth: torchvision names, classifier.* ignored, fc6/fc7 kept.
    imagenet = zeros(vgg_shapes(VGG_TORCHVISION_CONVS), "features.", fill=3.0)
    imagenet.update(zeros({"classifier.0.weight": (4096, 25088), "classifier.6.bias": (1000,)}))
    assert load_state_dict(g, imagenet, kind="imagenet") == 26
    assert np.all(_value(g.feature_extractor.get_layer("conv5_1").kernel) == 3.0)
    assert np.all(_value(g.feature_extractor.get_layer("fc6").kernel) == 0.0)  # from the FADA load
    # Indices are renumbered: torchvision features.24 (conv5_1) is official backbone.23.
    imagenet["features.23.weight"] = imagenet.pop("features.24.weight")
    with pytest.raises(ValueError, match="features.23.weight"):
        load_state_dict(g, imagenet, kind="imagenet")


# ----------------------------------------------------------------------------------------------------
# File formats (small network)
# ----------------------------------------------------------------------------------------------------
SMALL_BLOCKS, SMALL_WIDTHS = (1, 1, 1, 1), (8, 16, 32, 64)  # deeplabv2_resnet_small


def _small():
    g = deeplabv2_resnet_small(3)
    disc = FineGrainedDiscriminator(3)
    disc.build((None, None, None, 256))
    return g, disc


def _uniform(rng, shape):
    return rng.uniform(0.5, 1.5, shape).astype("float32")


def _random_small_checkpoint(seed=0):
    rng = np.random.default_rng(seed)
    fe = resnet_shapes(SMALL_BLOCKS, SMALL_WIDTHS)
    cls, disc = head_shapes(256, k=3)
    return {
        "feature_extractor": {
            f"backbone.{k}": rng.uniform(0.5, 1.5, s).astype("float32") for k, s in fe.items()
        },
        "classifier": {k: rng.normal(size=s).astype("float32") * 0.01 for k, s in cls.items()},
        "model_D": {k: rng.normal(size=s).astype("float32") * 0.01 for k, s in disc.items()},
    }


def _write_safetensors(path, tensors, bf16=()):
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        if name in bf16:
            raw = (np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
            dtype = "BF16"
        else:
            raw, dtype = np.ascontiguousarray(array, dtype="<f4").tobytes(), "F32"
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def _flat(checkpoint):
    return {f"{section}.{k}": v for section, sd in checkpoint.items() for k, v in sd.items()}


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "npz"])
def test_file_formats_load_the_same_values(tmp_path, fmt):
    checkpoint = _random_small_checkpoint()
    path = tmp_path / f"ckpt.{fmt}"
    if fmt == "pth":
        torch = pytest.importorskip("torch")
        torch.save({s: {k: torch.from_numpy(v) for k, v in sd.items()} for s, sd in checkpoint.items()}, path)
    elif fmt == "safetensors":
        _write_safetensors(path, _flat(checkpoint))
    else:
        np.savez(path, **_flat(checkpoint))
    g, disc = _small()
    load_torch_weights(g, path, discriminator=disc)
    kernel = _value(g.feature_extractor.get_layer("layer3_0_conv2").kernel)
    np.testing.assert_array_equal(
        kernel, checkpoint["feature_extractor"]["backbone.layer3.0.conv2.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(_value(disc.target_head.bias), checkpoint["model_D"]["cls2.bias"])


def test_safetensors_bf16_and_dtypes(tmp_path):
    a = np.array([[1.5, -2.0], [0.15625, 3.0]], "float32")  # exactly representable in bf16
    path = tmp_path / "t.safetensors"
    _write_safetensors(path, {"a": a, "b": a * 2}, bf16={"a"})
    out = read_safetensors(path)
    assert out["a"].dtype == np.float32 and out["b"].dtype == np.float32
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], a * 2)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        read_checkpoint(tmp_path / "resnet101-5d3b4d8f.pth")
    (tmp_path / "w.bin2").write_bytes(b"")
    with pytest.raises(ValueError, match="Unknown checkpoint format"):
        read_checkpoint(tmp_path / "w.bin2")


def test_convert_checkpoint_writes_weights_h5(tmp_path):
    torch = pytest.importorskip("torch")
    checkpoint = _random_small_checkpoint(seed=1)
    src = tmp_path / "small.pth"
    module = {s: {"module." + k: torch.from_numpy(v) for k, v in sd.items()} for s, sd in checkpoint.items()}
    torch.save(module, src)
    paths = convert_checkpoint(src, tmp_path / "small", backbone="resnet_small", num_classes=3)
    assert paths == {
        "segmentor": str(tmp_path / "small.weights.h5"),
        "discriminator": str(tmp_path / "small.discriminator.weights.h5"),
    }
    g, disc = _small()
    load_torch_weights(g, src, discriminator=disc)
    fresh, fresh_disc = _small()
    fresh.load_weights(paths["segmentor"])
    keras.saving.load_weights(fresh_disc, paths["discriminator"])
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 33, 47, 3)).astype("float32")
    np.testing.assert_allclose(_value(fresh(x)), _value(g(x)), rtol=1e-6, atol=1e-6)
    feats = g.feature_extractor(x)
    np.testing.assert_allclose(_value(fresh_disc(feats)), _value(disc(feats)), rtol=1e-6, atol=1e-6)


def test_imagenet_file_with_a_discriminator_says_it_stays_random():
    # was: silent; the discriminator kept its random init. A FADA file without model_D raises (above).
    g, disc = _small()
    before = [_value(v).copy() for v in disc.weights]
    state = zeros(resnet_shapes(SMALL_BLOCKS, SMALL_WIDTHS), fill=1.0)
    with pytest.warns(UserWarning, match="no 'model_D'.*discriminator keeps its random"):
        load_state_dict(g, state, discriminator=disc)
    assert all(np.all(_value(v) == 1) for v in g.feature_extractor.weights)
    for b, v in zip(before, disc.weights, strict=True):
        np.testing.assert_array_equal(b, _value(v))
