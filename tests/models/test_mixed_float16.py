"""``mixed_float16``: dynamic loss scaling through FADA's two-pass step (keras_fada.optimizers.
DynamicLossScale), on the backend under test."""

import keras
import numpy as np
import pytest

from keras_fada.optimizers import DynamicLossScale, TorchSGD, official_optimizers
from keras_fada.training.checkpoint import AtomicBackupAndRestore
from tests.support import fada_fixtures as fx

np_ = keras.ops.convert_to_numpy


@pytest.fixture
def float16_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def _state(model):
    opt = model.optimizer
    return {
        "scale": float(np_(opt.dynamic_scale)),
        "growth": int(np_(opt.step_counter)),
        "steps": int(np_(opt.iterations)),
        "updates": [int(np_(o.iterations)) for o in model.stage_optimizers.values()],
    }


def _changed(model, before):
    return max(float(np.abs(np_(v) - b).max()) for v, b in zip(model.trainable_weights, before, strict=True))


def _sgd_fada():
    """The tiny model with an SGD discriminator (Adam's first step is a sign, which float16
    noise flips where a gradient is near 0)."""
    model = fx.tiny_fada()
    opts = official_optimizers(base_lr=0.01, base_lr_d=0.01, max_iter=10)
    model.compile(**{**opts, "discriminator_optimizer": TorchSGD(0.05, momentum=0.9)})
    return model


def test_float16_step_unscales_to_the_float32_step(float16_policy):
    keras.config.set_dtype_policy("float32")
    f32 = _sgd_fada()
    start = fx.model_params(f32)
    f32.train_on_batch(fx.tiny_batch())
    keras.config.set_dtype_policy("mixed_float16")
    got = {}
    for scale in (2.0**15, 2.0**8):
        f16 = _sgd_fada()
        assert isinstance(f16.optimizer, DynamicLossScale)
        assert f16.segmentor.feature_extractor.get_layer("f_conv").compute_dtype == "float16"
        f16.optimizer.dynamic_scale.assign(scale)
        f16.train_on_batch(fx.tiny_batch())
        assert _state(f16) == {"scale": scale, "growth": 1, "steps": 1, "updates": [1, 1, 1]}
        got[scale] = fx.model_params(f16)
    want = fx.model_params(f32)
    for name in want:
        update = np.linalg.norm(want[name] - start[name])
        # Unscaled by the scale it was scaled by: the same update at either scale...
        assert np.linalg.norm(got[2.0**15][name] - got[2.0**8][name]) < 5e-3 * update, name
        # ...and the float32 update to float16 precision (torch's CPU float16 weight gradient of
        # D's first layer is ~15% off float32 whatever the scale; a wrong scale is off by 2^7+).
        assert np.linalg.norm(got[2.0**15][name] - want[name]) < 0.3 * update, name


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_an_overflow_skips_the_step_and_halves_the_scale(float16_policy, accumulation_steps):
    model = fx.tiny_fada(accumulation_steps=accumulation_steps)
    batch = fx.tiny_batch()
    model.train_on_batch(batch)
    model.optimizer.dynamic_scale.assign(2.0**60)  # the float16 gradients overflow
    before = [np_(v) for v in model.trainable_weights]
    model.train_on_batch(batch)
    assert _changed(model, before) == 0.0
    # Skipped: no update (the LR schedules stay), the scale halved, but the step is counted.
    assert _state(model) == {"scale": 2.0**59, "growth": 0, "steps": 2, "updates": [1, 1, 1]}
    model.optimizer.dynamic_scale.assign(2.0**10)
    model.train_on_batch(batch)
    assert _changed(model, before) > 0.0
    assert _state(model) == {"scale": 2.0**10, "growth": 1, "steps": 3, "updates": [2, 2, 2]}


def test_the_scale_doubles_after_the_growth_steps(float16_policy):
    model = fx.tiny_fada()
    model.train_on_batch(fx.tiny_batch())
    model.optimizer.step_counter.assign(model.optimizer.dynamic_growth_steps - 1)
    model.train_on_batch(fx.tiny_batch())
    assert _state(model)["scale"] == 2.0**16 and _state(model)["growth"] == 0


def _trained_with_scale(batch):
    model = fx.tiny_fada()
    model.train_on_batch(batch)
    model.optimizer.dynamic_scale.assign(2.0**60)
    model.train_on_batch(batch)  # skipped: scale 2^59, growth counter 0
    model.optimizer.dynamic_scale.assign(1024.0)
    model.train_on_batch(batch)  # growth counter 1
    return model


def test_the_loss_scale_survives_a_keras_file(float16_policy, tmp_path):
    batch = fx.tiny_batch()
    model = _trained_with_scale(batch)
    model.save(tmp_path / "fada.keras")
    loaded = keras.saving.load_model(tmp_path / "fada.keras")
    assert isinstance(loaded.optimizer, DynamicLossScale)
    assert _state(loaded) == _state(model) == {"scale": 1024.0, "growth": 1, "steps": 3, "updates": [2, 2, 2]}
    model.train_on_batch(batch)
    loaded.train_on_batch(batch)
    assert _changed(loaded, [np_(v) for v in model.trainable_weights]) == 0.0


def test_the_loss_scale_survives_a_backup(float16_policy, tmp_path):
    batch = fx.tiny_batch()
    model = _trained_with_scale(batch)
    AtomicBackupAndRestore(str(tmp_path / "backup")).save(model)
    fresh = fx.tiny_fada()
    assert AtomicBackupAndRestore(str(tmp_path / "backup")).restore(fresh) == 3
    assert _state(fresh) == _state(model)
