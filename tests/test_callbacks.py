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
