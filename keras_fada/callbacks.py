"""Keras callbacks for FADA training: learning rates, target mIoU, Class Center Distance, and
TensorBoard scalars without the ``tensorboard`` package."""

import os

import keras
import numpy as np

from keras_fada import evaluation, metrics
from keras_fada import optimizers as fada_optimizers


def current_step(model):
    """``model.optimizer.iterations`` as an int, also for a ``MirroredVariable`` (TF strategies)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of each optimiser group (``lr``, ``lr_classifier``, ``lr_d``) to
    the logs of every step, so progress bars, CSV and TensorBoard show them.

    The step and the schedules are read at the first batch, after ``BackupAndRestore`` (wherever
    it is listed) has restored a resumed run, and while JAX's variables still hold their values.
    """

    def on_train_begin(self, logs=None):
        self._step = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is not None:
            return
        model = self.model
        self._step = current_step(model)
        names = model.learning_rates(self._step)  # {"lr": ..., ...}, in stage_optimizers' order
        self._schedules = dict(
            zip(
                names,
                map(fada_optimizers.learning_rate_schedule, model.stage_optimizers.values()),
                strict=True,
            )
        )

    def _rates(self, step):
        schedule = keras.optimizers.schedules.LearningRateSchedule
        return {
            name: float(keras.ops.convert_to_numpy(lr(step))) if isinstance(lr, schedule) else float(lr)
            for name, lr in self._schedules.items()
        }

    def on_train_batch_end(self, batch, logs=None):
        # The step just taken used the schedules at the step count before it.
        self._last = self._rates(self._step)
        if logs is not None:
            logs.update(self._last)
        self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and getattr(self, "_last", None):
            logs.update(self._last)  # the epoch's last step, for History / CSVLogger


class _PeriodicEvaluation(keras.callbacks.Callback):
    """Runs ``self.evaluate()`` at the end of each epoch or, with ``every_n_steps``, every N
    steps, and writes its scalars into the logs: the step's, and the epoch's the latest values
    (so ``History``, ``CSVLogger`` and ``ModelCheckpoint(monitor=...)`` listed after it see them).
    The step count is read at the first batch, after ``BackupAndRestore`` restored it."""

    def __init__(self, every_n_steps=None):
        super().__init__()
        self.every_n_steps = every_n_steps
        self._step = None
        self.history = []
        self.latest = {}

    def _run(self, logs, step):
        results = self.evaluate()
        self.history.append({"step": step, **results})
        self.latest = {k: v for k, v in results.items() if np.isscalar(v)}
        if logs is not None:
            logs.update(self.latest)

    def on_train_begin(self, logs=None):
        self._step = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            self._step = current_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps and self._step % self.every_n_steps == 0:
            self._run(logs, self._step)

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_n_steps:
            self._run(logs, self._step)
        elif logs is not None:
            logs.update(self.latest)


class MeanIoUCallback(_PeriodicEvaluation):
    """Target-domain mIoU of the segmentor on ``(images, labels)`` batches (labels at full
    resolution, 255 ignored), logged as ``{prefix}miou``; per-class IoU in ``history``.

    Args:
        data: an iterable of ``(images, labels)`` batches (e.g. a ``tf.data.Dataset``).
        num_classes: K (19, 16 or 13).
        every_n_steps: evaluate every N training steps; default: at each epoch end.
        mean_over: class indices to average, e.g. the 13 classes of SYNTHIA's mIoU*.
        prefix: name prefix of the logged values.

    Example:
    >>> cb = MeanIoUCallback(target_val, num_classes=19, every_n_steps=2000)
    >>> model.fit(train, callbacks=[cb, keras.callbacks.ModelCheckpoint("best.keras", monitor="val_miou", mode="max")])
    """

    def __init__(self, data, num_classes, every_n_steps=None, mean_over=None, prefix="val_"):
        super().__init__(every_n_steps)
        self.data = data
        self.num_classes = int(num_classes)
        self.mean_over = mean_over
        self.prefix = prefix

    def evaluate(self):
        confusion = evaluation.confusion_over(self.model, self.data, self.num_classes)
        return {
            f"{self.prefix}miou": metrics.mean_iou(confusion, self.mean_over),
            f"{self.prefix}iou": metrics.iou_per_class(confusion).tolist(),
        }


class ClassCenterDistanceCallback(_PeriodicEvaluation):
    """Mean Class Center Distance (Eq. 9; lower = better class-level alignment) of F's features
    on labelled source and target batches, logged as ``ccd``; per class in ``history``."""

    def __init__(self, source_data, target_data, num_classes, every_n_steps=None):
        super().__init__(every_n_steps)
        self.datasets = [source_data, target_data]
        self.num_classes = int(num_classes)

    def evaluate(self):
        ccd = evaluation.class_center_distance(self.model, self.datasets, self.num_classes)
        return {
            "ccd": float(np.nanmean(ccd)) if np.isfinite(ccd).any() else float("nan"),
            "ccd_per_class": ccd.tolist(),
        }


class ScalarTensorBoard(keras.callbacks.Callback):
    """TensorBoard scalars (``batch_<metric>`` every ``update_freq`` steps, ``epoch_<metric>``) written
    with TensorFlow's summary ops only: the stand-in for ``keras.callbacks.TensorBoard`` where the
    ``tensorboard`` package (which that callback needs to encode scalars) is not installed."""

    def __init__(self, log_dir, update_freq=50):
        super().__init__()
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        self.update_freq = int(update_freq)
        self._step = 0

    def _write(self, prefix, logs, step):
        with self._writer.as_default():
            for k, v in (logs or {}).items():
                if np.isscalar(v) or np.ndim(v) == 0:
                    value = self._tf.constant(float(v), self._tf.float32)
                    self._tf.summary.write(f"{prefix}{k}", value, step=step, metadata=self._meta)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.update_freq == 0:
            self._write("batch_", logs, self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._write("epoch_", logs, epoch)

    def on_train_end(self, logs=None):
        self._writer.close()


class ResumableTensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` whose batch step continues at ``optimizer.iterations``: Keras'
    restarts at 0 in every ``fit``, so a resumed run would write over its own curves."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        from keras_fada.backend.keras_internals import continue_tensorboard_steps

        continue_tensorboard_steps(self, int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))


def tensorboard_callback(log_dir, update_freq=50):
    """:class:`ResumableTensorBoard` when the ``tensorboard`` package is installed, else
    :class:`ScalarTensorBoard` (same event-file format, scalars only)."""
    try:
        import tensorboard  # noqa: F401

        return ResumableTensorBoard(log_dir, update_freq=update_freq)
    except ImportError:
        return ScalarTensorBoard(log_dir, update_freq=update_freq)
