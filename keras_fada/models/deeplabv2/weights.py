"""Load torchvision ImageNet weights and official FADA checkpoints into keras-fada networks.

Sources (never downloaded; the user points at a file):

* torchvision ``resnet101-5d3b4d8f.pth`` (keys ``conv1.weight``, ``layer3.0.conv2.weight``, ...),
* the Caffe-converted ``vgg16-00b39a1b.pth`` of the official code (``features.N.*``),
* official FADA checkpoints: a dict with ``feature_extractor`` (``backbone.*``), ``classifier``
  (``conv2d_list.{0..3}.*``) and optionally ``model_D`` (``D.0``, ``D.2``, ``cls1``, ``cls2``),
  keys with or without the DDP ``module.`` prefix.

``.pth`` files are read with ``torch.load(path, map_location="cpu", weights_only=True)`` (torch is
imported only then); ``.safetensors`` (parsed here with NumPy, no extra dependency) and ``.npz``
need no torch. For flat ``.safetensors`` / ``.npz`` FADA checkpoints, keys carry the section as a
prefix (``feature_extractor.backbone.conv1.weight``).

Every source key must land on exactly one Keras variable of the right shape and every variable
must be set; otherwise one ``ValueError`` names all the offending keys and **nothing** is assigned.
Conv kernels are transposed from PyTorch ``(out, in, kh, kw)`` to Keras ``(kh, kw, in, out)``.
"""

import json
import os
import struct
import warnings

import keras
import numpy as np
from keras import layers

from keras_fada.layers.discriminator import FineGrainedDiscriminator
from keras_fada.models.deeplabv2.normalization import FrozenBatchNormalization
from keras_fada.models.deeplabv2.vgg_backbone import VGG16_OFFICIAL_INDEX, VGG16_TORCHVISION_INDEX

SECTIONS = ("feature_extractor", "classifier", "model_D")
KINDS = ("auto", "imagenet", "fada")
_BN_KEYS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
_DISCRIMINATOR_MODULES = {"hidden_0": "D.0", "hidden_1": "D.2", "source_head": "cls1", "target_head": "cls2"}

# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def read_safetensors(path):
    """Reads a ``.safetensors`` file into ``{name: np.ndarray}`` with NumPy only.

    The format is an 8-byte little-endian header length, a JSON header
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` and the raw little-endian buffer.
    BF16 tensors are widened to float32.
    """
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len).decode("utf-8"))
        buffer = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = buffer[begin:end]
        dtype, shape = info["dtype"], tuple(info["shape"])
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, dtype=_SAFETENSORS_DTYPES[dtype])
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported safetensors dtype {dtype}")
        out[name] = array.reshape(shape).copy()
    return out


def _torch_to_numpy(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    if isinstance(obj, dict):
        return {k: _torch_to_numpy(v) for k, v in obj.items()}
    return obj


def read_checkpoint(path):
    """Reads ``.pth`` / ``.pt`` / ``.safetensors`` / ``.npz`` into (nested) dicts of NumPy arrays.

    Example:
    >>> state = read_checkpoint("resnet101-5d3b4d8f.pth")
    >>> state["conv1.weight"].shape
    (64, 3, 7, 7)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path} (keras-fada never downloads weights)")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return read_safetensors(path)
    if lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
        try:
            import torch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"Reading {path} needs PyTorch (pip install torch); "
                "or convert it to .safetensors / .npz first"
            ) from e
        return _torch_to_numpy(torch.load(path, map_location="cpu", weights_only=True))
    raise ValueError(f"Unknown checkpoint format: {path} (expected .pth, .safetensors or .npz)")


# --------------------------------------------------------------------------------------------------
# Keras variables under their official names
# --------------------------------------------------------------------------------------------------
def _add(targets, key, variable):
    if key in targets:
        raise RuntimeError(f"Two Keras variables claim the checkpoint key {key!r}")
    targets[key] = variable


def _layer_targets(targets, module, layer):
    if isinstance(layer, layers.Conv2D):
        _add(targets, f"{module}.weight", layer.kernel)
        if layer.use_bias:
            _add(targets, f"{module}.bias", layer.bias)
    elif isinstance(layer, (FrozenBatchNormalization, layers.BatchNormalization)):
        for torch_name, keras_name in _BN_KEYS:
            _add(targets, f"{module}.{torch_name}", getattr(layer, keras_name))
    else:
        raise TypeError(f"Don't know the official names of layer {layer.name!r} ({type(layer).__name__})")
    n_weights = len(layer.weights)
    claimed = sum(1 for k in targets if k.startswith(module + "."))
    if n_weights != claimed:
        raise RuntimeError(f"Layer {layer.name!r} has {n_weights} variables, {claimed} mapped")


def _official_module(layer_name):
    if layer_name in VGG16_OFFICIAL_INDEX:
        return f"backbone.{VGG16_OFFICIAL_INDEX[layer_name]}"
    return "backbone." + layer_name.replace("_", ".")


def feature_extractor_variables(feature_extractor):
    """``{official key: keras.Variable}`` of a DeepLabV2 feature extractor (``backbone.*`` keys).

    Example:
    >>> fe = deeplabv2_resnet101(19).feature_extractor
    >>> tuple(feature_extractor_variables(fe)["backbone.conv1.weight"].shape)
    (7, 7, 3, 64)
    """
    targets = {}
    for layer in feature_extractor.layers:
        if layer.weights:
            _layer_targets(targets, _official_module(layer.name), layer)
    return targets


def classifier_variables(classifier):
    """``{official key: keras.Variable}`` of an ``ASPPClassifier`` (``conv2d_list.{i}.*``)."""
    targets = {}
    for i, conv in enumerate(classifier.conv2d_list):
        _layer_targets(targets, f"conv2d_list.{i}", conv)
    return targets


def discriminator_variables(discriminator):
    """``{official key: keras.Variable}`` of a ``FineGrainedDiscriminator`` (``D.0``, ``D.2``,
    ``cls1``, ``cls2``: hidden_0, hidden_1, source_head, target_head)."""
    convs = {conv.name: conv for conv in discriminator.hidden}
    convs.update(source_head=discriminator.source_head, target_head=discriminator.target_head)
    if len(discriminator.hidden) != 2:
        raise ValueError("Official checkpoints have a discriminator with exactly two hidden convs")
    targets = {}
    for name, module in _DISCRIMINATOR_MODULES.items():
        _layer_targets(targets, module, convs[name])
    return targets


# --------------------------------------------------------------------------------------------------
# Matching and assignment
# --------------------------------------------------------------------------------------------------
def _strip_module(state):
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _torch_shape(variable):
    shape = tuple(int(s) for s in variable.shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


class _Plan:
    """Collects (variable, value) pairs and every problem, across all sections, before assigning."""

    def __init__(self):
        self.assignments = []
        self.unexpected, self.missing, self.mismatched = [], [], []

    def match(self, section, targets, source, names=None, ignorable=lambda key: False, allow_unset=()):
        names = names or {}
        for key, value in source.items():
            shown = f"{section}:{names.get(key, key)}"
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
            if ignorable(key):
                continue
            variable = targets.get(key)
            if variable is None:
                self.unexpected.append(f"{shown} {tuple(value.shape)}")
                continue
            expected = _torch_shape(variable)
            if tuple(value.shape) != expected:
                self.mismatched.append(f"{shown}: checkpoint {tuple(value.shape)} vs Keras {expected}")
                continue
            if value.ndim == 4:
                value = np.transpose(value, (2, 3, 1, 0))
            self.assignments.append((variable, value))
        for key, variable in targets.items():
            if key not in source and key not in allow_unset:
                self.missing.append(f"{section}:{key} {_torch_shape(variable)} ({variable.path})")

    def apply(self):
        problems = []
        for title, items in (
            ("keys with no Keras variable", self.unexpected),
            ("Keras variables the checkpoint leaves unset", self.missing),
            ("shape mismatches (PyTorch layout)", self.mismatched),
        ):
            if items:
                problems.append(f"{len(items)} {title}:\n    " + "\n    ".join(items))
        if problems:
            raise ValueError(
                "The checkpoint does not match the network; nothing was loaded.\n  " + "\n  ".join(problems)
            )
        for variable, value in self.assignments:
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return len(self.assignments)


def _split_sections(state):
    """Returns ``(kind, sections)`` with sections ``{"feature_extractor": {...}, ...}`` or ``None``."""
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state.get("feature_extractor"), dict):
        present = [name for name in SECTIONS if isinstance(state.get(name), dict)]
        return "fada", {name: _strip_module(state[name]) for name in present}
    prefixed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in SECTIONS and rest:
            prefixed.setdefault(head, {})[rest] = value
    if "feature_extractor" in prefixed:
        return "fada", {name: _strip_module(section) for name, section in prefixed.items()}
    return "imagenet", {"imagenet": _strip_module(state)}


def _ensure_built(segmentor, discriminator):
    if not segmentor.built:
        raise ValueError("Build the segmentor before loading weights")
    if discriminator is not None and not discriminator.built:
        discriminator.build((None, None, None, int(segmentor.feature_extractor.output.shape[-1])))


def load_state_dict(segmentor, state_dict, discriminator=None, kind="auto"):
    """Loads an in-memory checkpoint (``{name: array}`` or a FADA dict) into the networks.

    Args:
        segmentor: a ``Segmentor`` from ``deeplabv2_resnet*`` / ``deeplabv2_vgg*``.
        state_dict: what ``read_checkpoint`` returns.
        discriminator: optional ``FineGrainedDiscriminator`` to fill from ``model_D``.
        kind: ``"imagenet"`` (fills only the feature extractor; the classifier and, for VGG, fc6/fc7
            keep their init), ``"fada"`` (feature extractor + classifier [+ discriminator]) or
            ``"auto"`` (FADA when the checkpoint has a ``feature_extractor`` section).

    Returns:
        The number of Keras variables assigned.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _ensure_built(segmentor, discriminator)
    detected, sections = _split_sections(dict(state_dict))
    kind = detected if kind == "auto" else kind
    if kind != detected:
        raise ValueError(f"Asked for kind={kind!r} but the checkpoint looks like {detected!r}")
    fe_targets = feature_extractor_variables(segmentor.feature_extractor)
    plan = _Plan()
    if kind == "imagenet":
        if discriminator is not None:  # an ImageNet file has no discriminator: say so
            warnings.warn(
                "An ImageNet checkpoint has no 'model_D' section: the discriminator keeps its random "
                "initialisation (only the feature extractor is loaded)",
                stacklevel=2,
            )
        source, names, ignorable, allow_unset = _imagenet_source(sections["imagenet"], fe_targets)
        plan.match("imagenet", fe_targets, source, names, ignorable, allow_unset)
        return plan.apply()
    for name in ("feature_extractor", "classifier"):
        if name not in sections:
            raise ValueError(f"The FADA checkpoint has no {name!r} section (found {sorted(sections)})")
    plan.match("feature_extractor", fe_targets, sections["feature_extractor"], ignorable=_is_bn_counter)
    plan.match("classifier", classifier_variables(segmentor.classifier), sections["classifier"])
    if discriminator is not None:
        if "model_D" not in sections:
            raise ValueError("A discriminator was given but the checkpoint has no 'model_D' section")
        plan.match("model_D", discriminator_variables(discriminator), sections["model_D"])
    return plan.apply()


def _is_bn_counter(key):
    return key.endswith("num_batches_tracked")


def _imagenet_source(state, fe_targets):
    """Renames torchvision / Caffe-VGG ImageNet keys to the official ``backbone.*`` keys."""
    if "backbone.0.weight" in fe_targets:  # VGG
        by_torchvision = {idx: VGG16_OFFICIAL_INDEX[name] for name, idx in VGG16_TORCHVISION_INDEX.items()}
        source, names = {}, {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            index, _, param = rest.partition(".")
            if head == "features" and index.isdigit() and int(index) in by_torchvision:
                new = f"backbone.{by_torchvision[int(index)]}.{param}"
            else:
                new = key
            source[new], names[new] = value, key
        fc = (VGG16_OFFICIAL_INDEX["fc6"], VGG16_OFFICIAL_INDEX["fc7"])
        allow_unset = {f"backbone.{i}.{p}" for i in fc for p in ("weight", "bias")}
        return source, names, (lambda k: k.startswith("classifier.")), allow_unset
    source = {f"backbone.{k}": v for k, v in state.items()}
    names = {f"backbone.{k}": k for k in state}
    return source, names, (lambda k: k.startswith("backbone.fc.") or _is_bn_counter(k)), set()


def load_torch_weights(segmentor, path, discriminator=None, kind="auto"):
    """Loads a torchvision ImageNet file or an official FADA checkpoint into keras-fada networks.

    Args:
        segmentor: a ``Segmentor`` (``deeplabv2_resnet101``, ``deeplabv2_vgg16``, ...).
        path: ``.pth`` (read with ``torch.load(weights_only=True)``), ``.safetensors`` or ``.npz``.
        discriminator: optional ``FineGrainedDiscriminator`` filled from the checkpoint's ``model_D``.
        kind: ``"auto"``, ``"imagenet"`` or ``"fada"`` (see ``load_state_dict``).

    Example:
    >>> g = deeplabv2_resnet101(num_classes=19)
    >>> d = FineGrainedDiscriminator(19)
    >>> load_torch_weights(g, "s2c_adv.pth", discriminator=d)
    """
    return load_state_dict(segmentor, read_checkpoint(path), discriminator=discriminator, kind=kind)


def convert_checkpoint(src, dst_prefix, backbone="resnet101", num_classes=19, frozen_bn=True, kind="auto"):
    """Converts a PyTorch checkpoint to Keras ``.weights.h5`` files.

    Writes ``{dst_prefix}.weights.h5`` (the segmentor, ``Segmentor.save_weights``) and, when the
    checkpoint has ``model_D``, ``{dst_prefix}.discriminator.weights.h5``
    (``keras.saving.save_weights`` of a ``FineGrainedDiscriminator``; read it back with
    ``keras.saving.load_weights(disc, path)`` after building ``disc``).

    Args:
        src: the source file (see ``read_checkpoint``).
        dst_prefix: output path prefix.
        backbone: ``"resnet101"``, ``"vgg16"`` or ``"resnet_small"``.
        num_classes: K.
        frozen_bn: build the ResNet with frozen (``True``) or trainable BN.
        kind: ``"auto"``, ``"imagenet"`` or ``"fada"``.

    Returns:
        ``{"segmentor": path, "discriminator": path}`` (the latter only when written).

    Example:
    >>> convert_checkpoint("g2c_sd.pth", "g2c_sd", backbone="resnet101", frozen_bn=False)
    {'segmentor': 'g2c_sd.weights.h5'}
    """
    from keras_fada.models.deeplabv2 import segmentor as seg

    builders = {
        "resnet101": lambda: seg.deeplabv2_resnet101(num_classes, frozen_bn=frozen_bn),
        "resnet_small": lambda: seg.deeplabv2_resnet_small(num_classes, frozen_bn=frozen_bn),
        "vgg16": lambda: seg.deeplabv2_vgg16(num_classes),
    }
    if backbone not in builders:
        raise ValueError(f"backbone must be one of {sorted(builders)}, got {backbone!r}")
    state = read_checkpoint(src)
    segmentor = builders[backbone]()
    _, sections = _split_sections(dict(state))
    discriminator = None
    if "model_D" in sections and kind != "imagenet":
        discriminator = FineGrainedDiscriminator(num_classes, name="discriminator")
    load_state_dict(segmentor, state, discriminator=discriminator, kind=kind)
    dst_prefix = os.fspath(dst_prefix)
    for suffix in (".weights.h5",):
        if dst_prefix.endswith(suffix):
            dst_prefix = dst_prefix[: -len(suffix)]
    paths = {"segmentor": f"{dst_prefix}.weights.h5"}
    segmentor.save_weights(paths["segmentor"])
    if discriminator is not None:
        paths["discriminator"] = f"{dst_prefix}.discriminator.weights.h5"
        keras.saving.save_weights(discriminator, paths["discriminator"])
    return paths
