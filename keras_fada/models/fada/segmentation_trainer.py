"""Supervised stages of the FADA pipeline: source-only training and self-distillation."""

import keras
from keras import ops

from keras_fada import losses
from keras_fada import optimizers as fada_optimizers
from keras_fada.ops import resize_bilinear


def _scaled_copy(optimizer, multiplier):
    """A fresh optimiser like ``optimizer`` whose learning rate (or schedule) is scaled."""
    config = optimizer.get_config()
    lr = fada_optimizers.learning_rate_schedule(optimizer)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        schedule_config = lr.get_config()
        if "initial_learning_rate" not in schedule_config:
            raise ValueError(
                f"cannot derive the classifier's learning rate from a {type(lr).__name__}; "
                "pass classifier_optimizer= to compile()"
            )
        schedule_config["initial_learning_rate"] *= multiplier
        config["learning_rate"] = type(lr).from_config(schedule_config)
    else:
        config["learning_rate"] = float(ops.convert_to_numpy(lr)) * multiplier
    config["name"] = f"{config['name']}_x{multiplier:g}"
    return type(optimizer).from_config(config)


@keras.saving.register_keras_serializable(package="keras_fada")
class SegmentationTrainer(keras.Model):
    """Trains a segmentor G = C∘F by pixel-wise cross-entropy: the source-only stage and the
    self-distillation stage (the same loss on target pseudo-labels) of the FADA pipeline.

    The segmentor must expose ``feature_extractor`` (F) and ``classifier`` (C); C's stride-8
    logits are upsampled bilinearly with ``align_corners=True`` to the label size before the loss,
    as the official code does. Labels use 255 for "ignore".

    Batches are ``(images, labels)``: ``images`` float32 ``(N, H, W, 3)`` RGB in [0, 255] (the
    segmentor normalises them), ``labels`` int ``(N, H, W)`` train ids.

    ``compile()`` defaults to the official recipe: PyTorch-semantics SGD (momentum 0.9, weight
    decay 5e-4, poly decay 0.9) for F and the same at 10x the learning rate for C. A single
    ``optimizer`` is used for F, and a copy at ``classifier_lr_multiplier`` times its learning
    rate for C unless ``classifier_optimizer`` is given.

    Example:
    >>> trainer = SegmentationTrainer(segmentor)
    >>> trainer.compile(**official_optimizers(base_lr=5e-4, max_iter=31250))
    >>> trainer.fit(source_batches, epochs=1, steps_per_epoch=20000)
    >>> logits = trainer.predict(images)   # at the image resolution
    """

    def __init__(self, segmentor, temperature=1.0, align_corners=True, accumulation_steps=1, **kwargs):
        super().__init__(**kwargs)
        self.segmentor = segmentor
        self.temperature = float(temperature)
        self.align_corners = bool(align_corners)
        if int(accumulation_steps) < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps!r}")
        # Each batch is split into this many micro-batches and gives one optimiser step, that of
        # the whole batch (accumulation.py).
        self.accumulation_steps = int(accumulation_steps)
        self.segmentation_loss_metric = keras.metrics.Mean(name="seg_loss")
        # Sub-networks come built (their variables define the optimiser groups at compile time).
        self.built = all(part is not None and part.built for part in self._networks())

    def _networks(self):
        return [self.segmentor]

    # ------------------------------------------------------------------ forward
    def upsample(self, x, size):
        # In float32 even under a mixed policy: the interpolation weights and the full-resolution
        # logits feed the losses, which the official code computes in float32.
        return resize_bilinear(ops.cast(x, "float32"), size, align_corners=self.align_corners)

    def call(self, images, training=False):
        """Class logits at the resolution of ``images``."""
        logits = self.segmentor(images, training=training)
        # ops.shape, not .shape: a TensorFlow retrace for a second image size has None dims.
        return self.upsample(logits, ops.shape(images)[1:3])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = losses.segmentation_loss(y_pred, y, temperature=self.temperature)
        self.segmentation_loss_metric.update_state(loss)
        return self._with_layer_losses(loss)

    def _with_layer_losses(self, loss):
        for extra in self.losses:  # regularisers a user may have attached
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return loss

    # ------------------------------------------------------------------ split steps
    # The step in passes, each giving loss terms as (mean, pixel count): what gradient
    # accumulation and data parallel need to equal the step of the whole batch (accumulation.py).
    pass_names = ("segmentation",)

    def pass_terms(self, index, x, y):
        """``(terms, loss)`` of pass ``index`` on a (micro-)batch: ``{name: (mean, count)}`` and
        the objective to differentiate."""
        seg = losses.segmentation_loss(
            self(x, training=True), y, temperature=self.temperature, with_count=True
        )
        penalty = self._with_layer_losses(ops.zeros((), "float32"))
        return {"seg": seg, "penalty": (penalty, ops.ones((), "float32"))}, seg[0] + penalty

    def pass_groups(self, index):
        """Per trainable variable, the term whose count weights its gradient in pass ``index``."""
        return ["seg"] * len(self.trainable_variables)

    def update_loss_metrics(self, means):
        """Updates the loss trackers from the global term means; returns the total loss."""
        self.segmentation_loss_metric.update_state(means["seg"])
        return means["seg"] + means["penalty"]

    def uses_split_step(self):
        """Whether ``train_step`` runs the passes of ``accumulation.py`` (accumulating, or under
        a data-parallel engine) rather than Keras' own step."""
        from keras_fada.training import distribute

        return self.accumulation_steps > 1 or distribute.replicas() > 1

    def train_step(self, *args):
        # (data) on TF and torch, (state, data) on JAX's stateless trainer.
        if not self.uses_split_step():
            return super().train_step(*args)
        from keras_fada.models.fada.accumulation import backend_step

        return backend_step().train_step(self, *args)

    def _loss_metric(self):
        """The ``"loss"`` metric that ``fit`` logs, for a custom training step to update (found by
        name in ``self.metrics``, as in Keras' guide to customising ``fit``)."""
        for metric in self.metrics:
            if metric.name == "loss":
                return metric
        raise ValueError(f"{self.name} has no 'loss' metric: compile() it first")

    # ------------------------------------------------------------------ optimisation
    def _optimizer_groups(self):
        """(name, variables) of each group that has its own optimiser."""
        return [
            ("optimizer", self.segmentor.feature_extractor.trainable_variables),
            ("classifier_optimizer", self.segmentor.classifier.trainable_variables),
        ]

    def _default_optimizers(self):
        return fada_optimizers.official_optimizers(base_lr=5e-4, max_iter=31250)

    def compile(self, optimizer=None, classifier_optimizer=None, classifier_lr_multiplier=10.0, **kwargs):
        """Optimisers per group; any left out follow the official recipe of this stage.

        Args:
            optimizer: the feature extractor's optimiser.
            classifier_optimizer: the classifier's; by default a copy of ``optimizer`` at
                ``classifier_lr_multiplier`` times its learning rate (official: 10x).
            **kwargs: passed to ``keras.Model.compile`` (e.g. ``jit_compile``,
                ``steps_per_execution``).
        """
        given = {"optimizer": optimizer, "classifier_optimizer": classifier_optimizer}
        self._compile_optimizers(self._resolve_optimizers(given, classifier_lr_multiplier), **kwargs)

    def _resolve_optimizers(self, given, classifier_lr_multiplier):
        optimizers = self._default_optimizers()
        given = {name: keras.optimizers.get(opt) for name, opt in given.items() if opt is not None}
        if "optimizer" in given and "classifier_optimizer" not in given:
            given["classifier_optimizer"] = _scaled_copy(given["optimizer"], classifier_lr_multiplier)
        optimizers.update(given)
        return optimizers

    def _compile_optimizers(self, optimizers, **kwargs):
        groups = self._optimizer_groups()
        self.stage_optimizers = {name: optimizers[name] for name, _ in groups}
        owner = {}
        for name, variables in groups:
            for v in variables:
                owner[id(v)] = self.stage_optimizers[name]
        unowned = [v.path for v in self.trainable_variables if id(v) not in owner]
        if unowned:
            raise ValueError(f"trainable variables outside F, C and D: {unowned[:5]}")
        # One container optimiser holds every group's state, so that checkpoints,
        # BackupAndRestore and JAX's stateless step see all of it; it routes each
        # variable's gradient to its group's optimiser.
        router = keras.optimizers.MultiOptimizer(lambda v: owner[id(v)], name="fada_optimizers")
        optimizer = router
        if self.dtype_policy.name == "mixed_float16":
            # Dynamic loss scaling (Keras would wrap with its own LossScaleOptimizer).
            optimizer = fada_optimizers.DynamicLossScale(router, name="loss_scale")
        super().compile(optimizer=optimizer, **kwargs)
        for name, variables in groups:
            self.stage_optimizers[name].build(variables)
        # Built now: a .keras file's optimiser state (loss scale included) loads only into a
        # built optimiser, and a traced step reads the scale variable, not its initial value.
        optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        if not getattr(self, "stage_optimizers", None):
            return None
        return {name: keras.saving.serialize_keras_object(opt) for name, opt in self.stage_optimizers.items()}

    def compile_from_config(self, config):
        optimizers = {name: keras.saving.deserialize_keras_object(c) for name, c in config.items()}
        self._compile_optimizers({**self._default_optimizers(), **optimizers})

    def learning_rates(self, step=None):
        """Learning rate of each optimiser group at ``step`` (default: the current iteration),
        e.g. ``{"lr": ..., "lr_classifier": ..., "lr_d": ...}``."""
        names = {
            "optimizer": "lr",
            "classifier_optimizer": "lr_classifier",
            "discriminator_optimizer": "lr_d",
        }
        return {
            names[name]: fada_optimizers.learning_rate_at(opt, step)
            for name, opt in self.stage_optimizers.items()
        }

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        config.update(
            segmentor=keras.saving.serialize_keras_object(self.segmentor),
            temperature=self.temperature,
            align_corners=self.align_corners,
            accumulation_steps=self.accumulation_steps,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["segmentor"] = keras.saving.deserialize_keras_object(config["segmentor"])
        return cls(**config)
