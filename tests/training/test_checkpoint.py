"""The atomic backup (keras_fada.training.checkpoint) and the exact input position, in process: a
damaged latest backup falls back to the one before it, a write that fails keeps the old one, and a
stream started at batch k is the uninterrupted stream from batch k on."""

import json
import os

import keras
import numpy as np
import pytest

from keras_fada import data as kd
from keras_fada.training import RunError
from keras_fada.training.checkpoint import WEIGHTS, AtomicBackupAndRestore


def _model():
    keras.utils.set_random_seed(7)  # every model starts from the same weights
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def _xy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")


def _fit(model, backup, epochs, initial_epoch=0):
    x, y = _xy()
    model.fit(x, y, batch_size=4, epochs=epochs, initial_epoch=initial_epoch, verbose=0, shuffle=False,
              callbacks=[backup])  # fmt: skip


def _state(model):
    return [np.array(v) for v in model.weights] + [np.array(v) for v in model.optimizer.variables]


def test_restore_gives_weights_optimizer_and_step_and_fit_continues(tmp_path):
    a = _model()
    _fit(a, AtomicBackupAndRestore(str(tmp_path / "b")), epochs=2)
    after_two = _state(a)
    assert sorted(os.listdir(tmp_path / "b")) == ["ckpt-000000001", "ckpt-000000002"]
    state = json.loads((tmp_path / "b" / "ckpt-000000002" / "state.json").read_text())
    assert state["step"] == 2 and state["epoch"] == 2 and state["data_position"] == 2

    b = _model()  # a fresh process: model.fit restores in on_train_begin and continues at epoch 2
    backup = AtomicBackupAndRestore(str(tmp_path / "b"))
    x, y = _xy()
    history = b.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[backup])
    assert history.epoch == [2]
    c = _model()  # the uninterrupted reference: three epochs in one go
    _fit(c, AtomicBackupAndRestore(str(tmp_path / "c")), epochs=3)
    for u, v in zip(_state(b), _state(c), strict=True):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(after_two, _state(c), strict=True))
    assert sorted(os.listdir(tmp_path / "b")) == ["ckpt-000000002", "ckpt-000000003"]  # keep=2


def test_damaged_latest_backup_falls_back_with_one_warning(tmp_path):
    a = _model()
    backup = AtomicBackupAndRestore(str(tmp_path / "b"))
    _fit(a, backup, epochs=1)
    after_one = _state(a)
    _fit(a, backup, epochs=2, initial_epoch=1)
    latest = tmp_path / "b" / "ckpt-000000002" / WEIGHTS
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated, as by a kill
    (tmp_path / "b" / ".tmp-ckpt-000000003-1").mkdir()  # a write that was killed before its rename
    warnings = []
    b = _model()
    assert AtomicBackupAndRestore(str(tmp_path / "b"), warn=warnings.append).restore(b) == 1
    assert len(warnings) == 1 and "ckpt-000000002" in warnings[0] and "unreadable" in warnings[0]
    for u, v in zip(_state(b), after_one, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not (tmp_path / "b" / ".tmp-ckpt-000000003-1").exists()


def test_full_disk_during_a_write_keeps_the_previous_backup(tmp_path, monkeypatch):
    a = _model()
    backup = AtomicBackupAndRestore(str(tmp_path / "b"))
    _fit(a, backup, epochs=1)
    monkeypatch.setenv("KERAS_FADA_FAULT", "enospc:2")
    with pytest.raises(RunError, match=r"No space left on device; the backup at step 1 is kept"):
        _fit(a, backup, epochs=2, initial_epoch=1)
    assert os.listdir(tmp_path / "b") == ["ckpt-000000001"]  # no partial backup beside it
    assert AtomicBackupAndRestore(str(tmp_path / "b")).restore(_model()) == 1


def test_adaptation_snapshots_keep_the_discriminator_beside_the_segmentor(tmp_path):
    """Each snapshot step writes discriminator_iter<N> with segmentor_iter<N>; keep prunes both; the
    weights load back into the config's discriminator (build.load_discriminator), another shape fails."""
    import types

    from keras_fada import config as C
    from keras_fada.training import build
    from keras_fada.training import run_dir as R
    from keras_fada.training.checkpoint import SegmentorSnapshots

    cfg = C.load_config("synthetic", overrides=["discriminator.width=8"])
    keras.utils.set_random_seed(0)
    segmentor = build.build_segmentor("small", 19)
    disc = build.discriminator(cfg, segmentor)
    snaps = SegmentorSnapshots(segmentor, str(tmp_path), 1, keep=2, discriminator=disc)
    (tmp_path / "discriminator_iter000009.weights.h5").write_bytes(b"")  # an orphan: goes at pruning
    for step in (1, 2, 3):
        snaps.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=step)))
        snaps.on_epoch_end(step - 1)
    assert sorted(os.listdir(tmp_path)) == [
        f"{kind}_iter00000{step}.weights.h5" for kind in ("discriminator", "segmentor") for step in (2, 3)
    ]  # fmt: skip
    path = R.discriminator_beside(str(tmp_path / "segmentor_iter000003.weights.h5"))
    loaded = build.load_discriminator(path, cfg, segmentor)
    assert loaded.num_classes == 19 and loaded.filters == (8, 4)
    for u, v in zip(loaded.weights, disc.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    wider = C.load_config("synthetic", overrides=["discriminator.width=16"])
    with pytest.raises(RunError, match="does not fit the config's discriminator"):
        build.load_discriminator(path, wider, segmentor)
    with pytest.raises(RunError, match="does not exist"):
        build.load_discriminator(str(tmp_path / "nothing.weights.h5"), cfg, segmentor)


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return kd.synthetic_specs(str(root), num_source=5, num_source_val=1, num_target_train=3, num_target_val=1,
                              height=16, width=32)  # fmt: skip


def _batches(ds, n):
    return [keras.tree.map_structure(np.asarray, b) for b in ds.take(n).as_numpy_iterator()]


@pytest.mark.parametrize("kind", ["supervised", "balanced", "adaptation", "distillation"])
def test_stream_started_at_batch_k_continues_the_uninterrupted_stream(specs, kind):
    def make(start):
        if kind == "adaptation":
            return kd.make_adaptation_dataset(specs["source_train"], specs["target_train"], 2, jitter=True,
                                              seed=3, start=start)  # fmt: skip
        if kind == "distillation":
            return kd.make_self_distillation_dataset(specs["source_train"], 2, crop_size=(16, 32), seed=3,
                                                     start=start)  # fmt: skip
        return kd.make_supervised_dataset(specs["source_train"], 2, jitter=True, seed=3, start=start,
                                          class_balanced=kind == "balanced", num_samples=7 if kind == "balanced" else None)  # fmt: skip

    whole = _batches(make(0), 9)  # 18 images: past several epochs of the 5 source / 3 target files
    for k in (1, 3, 7):
        for u, v in zip(whole[k:], _batches(make(k), 9 - k), strict=True):
            keras.tree.map_structure(np.testing.assert_array_equal, u, v)
