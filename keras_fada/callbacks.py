"""Keras callbacks for FADA training: learning rates, target mIoU, Class Center Distance."""

import keras
import numpy as np

from keras_fada import evaluation, metrics


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of each optimiser group (``lr``, ``lr_classifier``, ``lr_d``) to
    the logs of every step, so progress bars, CSV and TensorBoard show them."""

    def on_train_begin(self, logs=None):
        model = self.model
        self._rates = model.learning_rates
        self._step = int(model.optimizer.iterations)

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
    """Runs ``self.evaluate()`` at the end of each epoch and, optionally, every N steps, and
    writes its scalars into the logs (so ``ModelCheckpoint(monitor=...)`` can use them)."""

    def __init__(self, every_n_steps=None):
        super().__init__()
        self.every_n_steps = every_n_steps
        self._step = 0
        self.history = []

    def _run(self, logs, step):
        results = self.evaluate()
        self.history.append({"step": step, **results})
        if logs is not None:
            logs.update({k: v for k, v in results.items() if np.isscalar(v)})

    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps and self._step % self.every_n_steps == 0:
            self._run(logs, self._step)

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_n_steps:
            self._run(logs, self._step)


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
