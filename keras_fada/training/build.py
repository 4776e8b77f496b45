"""Networks, the FADA model and the official optimisers, built from a resolved config."""

from __future__ import annotations

import os
import warnings

from keras_fada import optimizers as fopt
from keras_fada.config import ConfigError, backbones
from keras_fada.layers import DomainEncoder, FineGrainedDiscriminator
from keras_fada.models.deeplabv2 import (
    batch_norm_layers,
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    deeplabv2_vgg16,
    freeze_batch_norm,
    load_torch_weights,
)
from keras_fada.models.fada import FADA
from keras_fada.training import RunError
from keras_fada.training import run_dir as R

# backbone (a file in configs/backbones/) -> constructor(num_classes, frozen_bn)
BUILDERS = {
    "resnet101": lambda k, frozen_bn: deeplabv2_resnet101(k, frozen_bn=frozen_bn),
    "vgg16": lambda k, frozen_bn: deeplabv2_vgg16(k),
    "small": lambda k, frozen_bn: deeplabv2_resnet_small(k, frozen_bn=frozen_bn),
}


def build_segmentor(backbone: str, num_classes: int, freeze_bn: bool = True):
    """A randomly initialised DeepLabV2 segmentor; ``freeze_bn`` builds the frozen-BN variant."""
    if backbone not in BUILDERS:
        raise ConfigError(f"unknown backbone {backbone!r}; backbones: {', '.join(backbones())}")
    return BUILDERS[backbone](num_classes, freeze_bn)


def load_weights(segmentor, path: str, backbone: str, num_classes: int) -> None:
    """Keras ``.weights.h5`` or an official PyTorch checkpoint; a mismatch is a :class:`RunError`."""
    if not os.path.isfile(path):
        raise RunError(f"checkpoint {path!r} does not exist")
    try:
        if path.endswith(".weights.h5"):
            segmentor.load_weights(path)
        else:
            load_torch_weights(segmentor, path)
    except Exception as e:  # noqa: BLE001 - Keras/h5py raise many types for a mismatched file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(
            f"checkpoint {path!r} does not fit a {backbone} network with {num_classes} classes "
            f"(another backbone or class count?): {first[:300]}"
        ) from None


def whole_model_path(weights_path: str) -> str:
    """``<stage>/segmentor.weights.h5`` -> ``<stage>/segmentor.keras``, the whole model saved beside it."""
    stem = weights_path[: -len(".weights.h5")] if weights_path.endswith(".weights.h5") else weights_path
    return stem + ".keras"


def load_whole_segmentor(path: str, num_classes: int | None = None):
    """The segmentor of a preset folder, a ``.keras`` file, or a ``.weights.h5`` with its ``.keras``
    beside it (architecture, BN kind and normalisation from the file, no guessing); ``None`` for
    anything else (an official ``.pth``, a lone ``.weights.h5``)."""
    import keras

    from keras_fada.models.deeplabv2 import presets

    beside = whole_model_path(path) if path.endswith(".weights.h5") else None
    try:
        if os.path.isdir(path):
            segmentor = presets.from_preset(path)
        elif path.endswith(".keras") and os.path.isfile(path):
            segmentor = keras.saving.load_model(path)
        elif beside and os.path.isfile(beside) and os.path.isfile(path):
            segmentor = keras.saving.load_model(beside)
            segmentor.load_weights(path)
        else:
            return None
    except presets.PresetError as e:
        raise RunError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - Keras/h5py raise many types for a broken file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"checkpoint {path!r} does not load: {first[:300]}") from None
    if num_classes is not None and segmentor.num_classes != int(num_classes):
        raise RunError(
            f"checkpoint {path!r} predicts {segmentor.num_classes} classes, the task expects {num_classes}"
        )
    return segmentor


def load_segmentor(path: str, backbone: str, num_classes: int, freeze_bn=None):
    """A segmentor with the weights of ``path``: a preset folder, a ``.keras`` file or a
    ``.weights.h5`` saved beside its ``.keras`` load as saved (``load_whole_segmentor``); for
    other files the BN kind (frozen or trainable) of a ResNet is taken from the checkpoint
    unless ``freeze_bn`` is given."""
    whole = load_whole_segmentor(path, num_classes)
    if whole is not None:
        return whole
    variants = [freeze_bn] if freeze_bn is not None or backbone == "vgg16" else [True, False]
    error = None
    for frozen in variants:
        segmentor = build_segmentor(backbone, num_classes, True if frozen is None else frozen)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_weights(segmentor, path, backbone, num_classes)
            return segmentor
        except RunError as e:
            error = e
    raise error


def initial_segmentor(cfg: dict, freeze_bn: bool, init: str | None = None):
    """A stage's starting segmentor: the weights of ``init``, else ImageNet weights (``pretrained``)
    or random ones; ``freeze_bn`` fixes every BatchNorm (official FREEZE_BN)."""
    if init:
        segmentor = load_segmentor(init, cfg["backbone"], cfg["num_classes"])
        if freeze_bn:
            freeze_batch_norm(segmentor)
        else:  # a checkpoint saved frozen (the adapted teacher) loads frozen: train its BN as asked
            for layer in batch_norm_layers(segmentor):
                layer.trainable = True
        return segmentor
    segmentor = build_segmentor(cfg["backbone"], cfg["num_classes"], freeze_bn)
    if cfg.get("pretrained") and cfg["pretrained"] != R.SCRATCH:
        if not os.path.isfile(cfg["pretrained"]):
            raise RunError(f"pretrained weights {cfg['pretrained']!r} do not exist")
        load_torch_weights(segmentor, cfg["pretrained"], kind="imagenet")
    return segmentor


def domain_encoder(cfg: dict) -> DomainEncoder:
    """The adaptation stage's class-knowledge encoder (soft / hard / binary) from ``cfg``."""
    enc = cfg["encoder"]
    return DomainEncoder(
        enc["mode"], temperature=float(enc["temperature"]), clip=float(enc["clip"]),
        threshold=float(enc["threshold"]),
    )  # fmt: skip


def discriminator(cfg: dict, segmentor) -> FineGrainedDiscriminator:
    """FADA's discriminator for ``cfg`` on ``segmentor``'s features (2 x the encoder's knowledge
    channels), built, so that saved weights load into it."""
    width = int(cfg["discriminator"]["width"])
    disc = FineGrainedDiscriminator(
        domain_encoder(cfg).knowledge_channels(segmentor.num_classes), filters=(width, width // 2)
    )
    disc.build((None, None, None, int(segmentor.feature_channels)))
    return disc


def load_discriminator(path: str, cfg: dict, segmentor) -> FineGrainedDiscriminator:
    """:func:`discriminator` with the weights of ``path``; a missing or mismatched file is a :class:`RunError`."""
    import keras

    disc = discriminator(cfg, segmentor)
    if not os.path.isfile(path):
        raise RunError(f"discriminator checkpoint {path!r} does not exist")
    try:
        keras.saving.load_weights(disc, path)
    except Exception as e:  # noqa: BLE001 - Keras/h5py raise many types for a mismatched file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(
            f"discriminator checkpoint {path!r} does not fit the config's discriminator: {first[:300]}"
        ) from None
    return disc


def fada_model(cfg: dict, segmentor) -> FADA:
    """The adaptation stage's FADA model (encoder, discriminator, loss switches) from ``cfg``."""
    return FADA(
        segmentor,
        discriminator=discriminator(cfg, segmentor),
        encoder=domain_encoder(cfg),
        lambda_adv=float(cfg["lambda_adv"]),
        source_temperature=float(cfg["source_temperature"]),
        discriminator_resolution=cfg["discriminator"]["resolution"],
        discriminator_weights=tuple(cfg["discriminator"]["weights"]),
    )


def stage_optimizers(cfg: dict, stage: str) -> dict:
    """``compile()`` arguments of ``stage``: F's SGD, C's SGD (x10) and, for ``adapt``, D's Adam,
    each with the poly schedule of the stage."""
    s, o = cfg[stage], cfg["optim"]
    opts = fopt.official_optimizers(
        base_lr=float(s["base_lr"]),
        base_lr_d=float(s.get("base_lr_d", 1e-4)),
        max_iter=int(s["max_iter"]),
        power=float(o["power"]),
        momentum=float(o["momentum"]),
        weight_decay=float(o["weight_decay"]),
        classifier_lr_multiplier=float(o["classifier_lr_multiplier"]),
        adam_betas=tuple(o["adam_betas"]),
    )
    if stage != "adapt":
        opts.pop("discriminator_optimizer")
    return opts


def preset_from_checkpoint(
    src, preset_dir, backbone, num_classes, freeze_bn=True, kind="auto", task=None, eval_json=None
) -> str:
    """Writes a preset folder from an official-format checkpoint (``keras-fada convert --preset``).

    The metadata holds the task, class names and palette when ``task`` is given (and the task's
    resolved ``config.yaml`` beside them, which the CLI reads), and the mIoU with how it was
    measured when ``eval_json`` (written by ``keras-fada evaluate``) is given.
    """
    import json

    from keras_fada import config as C
    from keras_fada.data import labels as L
    from keras_fada.training import tasks

    if task is not None and task not in tasks.TASK_NAMES:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(tasks.TASK_NAMES)}")
    if eval_json is not None and not os.path.isfile(eval_json):
        raise RunError(f"--eval-json {eval_json!r} does not exist")
    segmentor = build_segmentor(backbone, num_classes, freeze_bn)
    try:
        load_torch_weights(segmentor, src, kind=kind)
    except (ValueError, KeyError) as e:
        raise RunError(f"checkpoint {src!r}: {' '.join(str(e).split())[:300]}") from None
    meta = {"backbone": backbone, "frozen_bn": bool(freeze_bn), "source_checkpoint": os.path.basename(src)}
    meta["palette"] = [list(c) for c in L.CITYSCAPES_PALETTE[:num_classes]]
    if task is not None:
        meta.update(task=task, class_names=list(tasks.get_task(task).class_names(num_classes)))
    if eval_json is not None:
        with open(eval_json) as f:
            scores = json.load(f)
        how = {
            k: scores[k] for k in ("task", "size", "scales", "flip", "num_classes_reported") if k in scores
        }
        meta.update(miou=scores.get("miou"), miou_how=how)
    segmentor.save_to_preset(preset_dir, metadata=meta)
    if task is not None:
        cfg = C.load_config(task, backbone, None, [f"num_classes={num_classes}"])
        C.dump(cfg, os.path.join(preset_dir, "config.yaml"))
    return preset_dir
