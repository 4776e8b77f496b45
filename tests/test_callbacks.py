"""Callbacks: MeanIoUCallback logs a monitorable value; BackupAndRestore resumes at the same step."""

import keras
import numpy as np
import pytest

from keras_fada import callbacks, evaluation, metrics
from tests.support import fada_fixtures as fx
from tests.support import numpy_reference as ref


def _repeat(batch, n):
    for _ in range(n):
        yield (batch,)


def test_miou_callback_logs_a_monitorable_value():
    model = fx.tiny_fada()
    rng = np.random.default_rng(4)
    val = [(rng.normal(size=(2, 8, 8, 3)).astype("float32"), rng.integers(0, fx.K, (2, 16, 16)))]
    cb = callbacks.MeanIoUCallback(val, num_classes=fx.K)
    lr = callbacks.LearningRateLogger()
    history = model.fit(
        _repeat(fx.tiny_batch(), 2), steps_per_epoch=2, epochs=1, verbose=0, callbacks=[lr, cb]
    )
    cm = evaluation.confusion_over(model, val, fx.K)
    assert history.history["val_miou"][0] == pytest.approx(metrics.mean_iou(cm))
    assert len(cb.history[0]["val_iou"]) == fx.K
    assert history.history["lr_classifier"][0] == pytest.approx(ref.poly_lr(0.1, 1, 10), rel=1e-6)


def test_backup_and_restore_resumes_at_the_same_step(tmp_path):
    batch = fx.tiny_batch()

    def fit(model, epochs, extra=()):
        data = _repeat(batch, epochs)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        model.fit(data, epochs=epochs, steps_per_epoch=1, verbose=0, callbacks=[backup, *extra])

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    straight = fx.tiny_fada()
    straight.fit(_repeat(batch, 4), epochs=4, steps_per_epoch=1, verbose=0)

    first = fx.tiny_fada()
    with pytest.raises(KeyboardInterrupt):
        fit(first, 4, [Interrupt()])
    keras.utils.set_random_seed(99)  # a different fresh init: the backup must overwrite it
    resumed = fx.tiny_fada()
    fit(resumed, 4)
    assert int(resumed.optimizer.iterations) == 4
    assert resumed.learning_rates() == pytest.approx(straight.learning_rates())
    want, got = fx.model_params(straight), fx.model_params(resumed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _trainer(**compile_kwargs):
    from keras_fada import SegmentationTrainer
    from keras_fada.optimizers import official_optimizers

    model = SegmentationTrainer(fx.tiny_segmentor())
    if not compile_kwargs:
        opts = official_optimizers(base_lr=0.01, max_iter=10)
        compile_kwargs = {k: opts[k] for k in ("optimizer", "classifier_optimizer")}
    model.compile(**compile_kwargs)
    return model


def _supervised(n):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    y = rng.integers(0, fx.K, (2, 8, 8)).astype("int32")
    for _ in range(n):
        yield x, y


def test_callbacks_listed_before_backup_and_restore_see_the_resumed_step(tmp_path):
    """The step is read at the first batch, after BackupAndRestore restored it (issue 20, item 8)."""
    rng = np.random.default_rng(7)
    val = [(rng.normal(size=(1, 8, 8, 3)).astype("float32"), rng.integers(0, fx.K, (1, 8, 8)))]

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(_supervised(4), epochs=4, steps_per_epoch=1, verbose=0,
                       callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()])  # fmt: skip
    resumed = _trainer()
    lr = callbacks.LearningRateLogger()
    miou = callbacks.MeanIoUCallback(val, num_classes=fx.K, every_n_steps=3)
    best = tmp_path / "best.weights.h5"
    save = keras.callbacks.ModelCheckpoint(str(best), monitor="val_miou", mode="max", save_best_only=True,
                                           save_weights_only=True)  # fmt: skip
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = resumed.fit(_supervised(2), epochs=4, steps_per_epoch=1, verbose=0,
                              callbacks=[lr, miou, save, keras.callbacks.BackupAndRestore(backup)])  # fmt: skip
    assert int(resumed.optimizer.iterations) == 4
    # epochs 2 and 3 take steps 3 and 4, at the schedules of steps 2 and 3
    want = [ref.poly_lr(0.1, step, 10) for step in (2, 3)]
    assert history.history["lr_classifier"] == pytest.approx(want, rel=1e-6)
    assert [h["step"] for h in miou.history] == [3]
    # every_n_steps: the latest value reaches the epoch logs (History, ModelCheckpoint)
    assert history.history["val_miou"] == pytest.approx([miou.history[0]["val_miou"]] * 2)
    assert best.is_file()
    assert not [w for w in caught if "val_miou" in str(w.message)]


def test_learning_rate_logger_with_a_constant_learning_rate():
    model = _trainer(optimizer=keras.optimizers.SGD(0.01))  # the classifier: a copy at 10x
    history = model.fit(_supervised(2), epochs=1, steps_per_epoch=2, verbose=0,
                        callbacks=[callbacks.LearningRateLogger()])  # fmt: skip
    assert history.history["lr"] == pytest.approx([0.01])
    assert history.history["lr_classifier"] == pytest.approx([0.1])


MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_fada import callbacks
from tests.test_callbacks import _trainer, _supervised
from tests.support import fada_fixtures as fx
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    model = _trainer()
x, y = next(_supervised(1))
data = tf.data.Dataset.from_tensors((x, y)).repeat()
lr = callbacks.LearningRateLogger()
miou = callbacks.MeanIoUCallback([(x, y)], num_classes=fx.K, every_n_steps=1)
history = model.fit(data, epochs=2, steps_per_epoch=1, verbose=0, callbacks=[lr, miou])
import json
from tests.support import numpy_reference as ref
pred = ref.resize_align_corners(np.asarray(model.segmentor(x)), 8, 8).argmax(-1)
iou = [((pred == c) & (y == c)).sum() / max(((pred == c) | (y == c)).sum(), 1) for c in range(fx.K)]
print("RESULT", json.dumps({"lr": history.history["lr_classifier"], "steps": [h["step"] for h in miou.history],
                            "miou": miou.history[-1]["val_miou"], "want": float(np.mean(iou))}))
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_callbacks_under_a_mirrored_strategy():
    """int(optimizer.iterations) failed on a MirroredVariable."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["lr"] == pytest.approx([ref.poly_lr(0.1, step, 10) for step in (0, 1)], rel=1e-6)
    assert result["steps"] == [1, 2]
    assert result["miou"] == pytest.approx(result["want"])  # predict_on_batch doubled the batch
