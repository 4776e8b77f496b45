"""Local presets, keras-hub style: one folder that rebuilds a segmentor without any guessing.

A preset holds ``config.json`` (the serialized architecture: backbone, BN kind, normalisation,
classes), ``model.weights.h5`` and ``metadata.json`` (task, class names, palette, the mIoU it
scored and how). Nothing is downloaded: a preset is a local folder.

Example:
>>> from keras_fada.models.deeplabv2 import Segmentor, deeplabv2_resnet_small
>>> deeplabv2_resnet_small(19).save_to_preset("g2c_small", metadata={"task": "gta5"})
>>> Segmentor.from_preset("g2c_small").num_classes
19
"""

from __future__ import annotations

import json
import os

import keras

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
FORMAT = "keras_fada.segmentor/1"


class PresetError(ValueError):
    """A folder that is not a (complete) segmentor preset."""


def is_preset(path) -> bool:
    """Whether ``path`` is a folder holding a preset's ``config.json``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def save_to_preset(segmentor, preset_dir, metadata=None) -> str:
    """Writes ``segmentor`` as a preset into ``preset_dir`` (created); returns the folder."""
    os.makedirs(preset_dir, exist_ok=True)
    with open(os.path.join(preset_dir, CONFIG_FILE), "w") as f:
        json.dump(keras.saving.serialize_keras_object(segmentor), f, indent=1)
    segmentor.save_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    meta = {"format": FORMAT, "keras_version": keras.version(), "num_classes": segmentor.num_classes}
    meta.update(metadata or {})
    with open(os.path.join(preset_dir, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    return preset_dir


def read_metadata(preset_dir) -> dict:
    """The preset's ``metadata.json`` (``{}`` when it has none)."""
    path = os.path.join(preset_dir, METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def from_preset(preset_dir):
    """The segmentor of ``preset_dir`` with its weights; :class:`PresetError` names what is missing."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(preset_dir, name)):
            raise PresetError(f"{preset_dir!r} is not a keras-fada preset: it has no {name}")
    import keras_fada.models.deeplabv2  # noqa: F401 - registers the serializable classes

    with open(os.path.join(preset_dir, CONFIG_FILE)) as f:
        config = json.load(f)
    try:
        segmentor = keras.saving.deserialize_keras_object(config)
        segmentor.load_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    except Exception as e:  # noqa: BLE001 - Keras/h5py raise many types for a broken file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PresetError(f"preset {preset_dir!r} does not load: {first[:300]}") from None
    return segmentor
