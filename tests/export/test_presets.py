"""Presets and whole-model files: saved as built (BN kind, classes), loaded without guessing, and a
preset made by ``keras-fada convert --preset`` scores what its official checkpoint scores."""

import json

import keras
import numpy as np
import pytest

from keras_fada.models.deeplabv2 import Segmentor, deeplabv2_resnet_small
from keras_fada.models.deeplabv2.presets import PresetError
from keras_fada.training import RunError
from keras_fada.training.build import load_segmentor, whole_model_path
from tests.models.test_checkpoint_import import head_shapes, resnet_shapes
from tests.support.cli import TINY, assert_user_error, run


def _x():
    return np.random.default_rng(0).uniform(0, 255, (1, 32, 64, 3)).astype("float32")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_preset_round_trip_keeps_bn_kind_and_values(tmp_path):
    g = deeplabv2_resnet_small(5, frozen_bn=False)
    g.save_to_preset(tmp_path / "p", metadata={"task": "synthetic", "miou": 12.5})
    h = Segmentor.from_preset(tmp_path / "p")
    assert type(h.feature_extractor.get_layer("bn1")) is keras.layers.BatchNormalization
    np.testing.assert_array_equal(_np(h(_x())), _np(g(_x())))
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["num_classes"] == 5 and meta["miou"] == 12.5 and meta["task"] == "synthetic"
    (tmp_path / "p" / "model.weights.h5").unlink()
    with pytest.raises(PresetError, match="no model.weights.h5"):
        Segmentor.from_preset(tmp_path / "p")
    with pytest.raises(RunError, match="no model.weights.h5"):
        load_segmentor(str(tmp_path / "p"), "small", 5)


def test_weights_beside_a_keras_file_load_as_saved(tmp_path):
    # was: load_segmentor guessed the BN kind from which network the weights fitted
    g = deeplabv2_resnet_small(5, frozen_bn=False)
    weights = str(tmp_path / "segmentor.weights.h5")
    g.save_weights(weights)
    g.save(whole_model_path(weights))
    h = load_segmentor(weights, "resnet101", 5)  # the .keras file wins over the given backbone
    assert type(h.feature_extractor.get_layer("bn1")) is keras.layers.BatchNormalization
    np.testing.assert_array_equal(_np(h(_x())), _np(g(_x())))
    with pytest.raises(RunError, match="predicts 5 classes, the task expects 19"):
        load_segmentor(weights, "small", 19)


def test_convert_preset_evaluates_like_its_official_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    fe = resnet_shapes((1, 1, 1, 1), (8, 16, 32, 64))
    cls, _ = head_shapes(256, k=19)
    state = {f"backbone.{k}": rng.uniform(0.5, 1.5, s) for k, s in fe.items()}
    official = {
        "feature_extractor": {k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()},
        "classifier": {
            k: torch.tensor(rng.normal(size=s) * 0.01, dtype=torch.float32) for k, s in cls.items()
        },
    }
    pth = tmp_path / "g2c_small.pth"
    torch.save(official, pth)
    data = tmp_path / "data"
    common = ("--task", "synthetic", "--backbone", "small", "--data-root", data, *TINY)
    code, text, res = run("evaluate", "--checkpoint", pth, "--output", tmp_path / "pth.json", *common)
    assert code == 0, text + repr(res.exception)
    preset = tmp_path / "preset"
    code, text, res = run(
        "convert", pth, preset, "--backbone", "small", "--preset", "--task", "synthetic",
        "--eval-json", tmp_path / "pth.json",
    )  # fmt: skip
    assert code == 0, text + repr(res.exception)
    code, text, res = run("evaluate", "--checkpoint", preset, "--output", tmp_path / "preset.json", *common)
    assert code == 0, text + repr(res.exception)
    from_pth = json.loads((tmp_path / "pth.json").read_text())
    from_preset = json.loads((tmp_path / "preset.json").read_text())
    assert from_preset["miou"] == pytest.approx(from_pth["miou"], abs=1e-9)
    assert from_preset["iou"] == pytest.approx(from_pth["iou"], abs=1e-9)
    meta = json.loads((preset / "metadata.json").read_text())
    assert meta["task"] == "synthetic" and meta["miou"] == from_pth["miou"] and len(meta["class_names"]) == 19
    assert meta["miou_how"]["size"] == [32, 64] and len(meta["palette"]) == 19
    code, text, _ = run("evaluate", "--checkpoint", tmp_path, *common)
    assert_user_error(code, text, "not a keras-fada preset", "config.json")
