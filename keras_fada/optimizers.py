"""The official FADA optimisation recipe: PyTorch-semantics SGD, Adam for D, poly learning rates."""

import keras
from keras import ops

from keras_fada.backend import fast_paths, keras_internals
from keras_fada.ops import match_variable_layout

#: Official values (official-code-facts §1): R101 adversarial stage.
OFFICIAL = {
    "base_lr": 2.5e-4,
    "base_lr_d": 1e-4,
    "max_iter": 62500,
    "power": 0.9,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "classifier_lr_multiplier": 10.0,
    "adam_betas": (0.9, 0.99),
}


class _SlotsLikeWeights:
    """Optimiser slots (momentum, Adam's moments) in the memory layout of their weights: on torch
    the conv kernels are stored OIHW (``keras_fada.ops.store_conv2d_kernel``), and an update over
    mismatched strides is markedly slower."""

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        slot = super().add_variable_from_reference(reference_variable, name, initializer)
        match_variable_layout(slot, reference_variable)
        return slot


@keras.saving.register_keras_serializable(package="keras_fada")
class TorchSGD(_SlotsLikeWeights, keras.optimizers.Optimizer):
    """SGD with PyTorch's semantics, the optimiser the official FADA code trains with.

    Keras' ``SGD(weight_decay=...)`` decays weights *decoupled* from the gradient and scales the
    momentum buffer by past learning rates. ``torch.optim.SGD`` instead adds ``wd * w`` to the
    gradient (L2, so the decay also accumulates in the momentum buffer) and scales the whole
    buffer by the *current* learning rate::

        buf = momentum * buf + (g + weight_decay * w)
        w   = w - lr * buf

    With a poly schedule and ``wd = 5e-4`` the two differ measurably over tens of thousands of
    steps, so the faithful rule is the default. Weight decay applies to biases too, as in the
    official code (its ``WEIGHT_DECAY_BIAS`` is never used).

    Example:
    >>> opt = TorchSGD(poly_schedule(2.5e-4, max_iter=62500), momentum=0.9, weight_decay=5e-4)
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay=0.0, name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.l2 = float(weight_decay)  # not Keras' decoupled `weight_decay`, which the base would apply

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(gradient, variable.dtype)
        if self.l2:
            step = step + self.l2 * variable
        if self.momentum:
            buf = self.momentums[keras_internals.slot_index(self, variable)]
            if _tf_fused_momentum(variable, buf, lr, step, self.momentum):
                return
            self.assign(buf, self.momentum * buf + step)
            step = buf
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.l2)
        return config


def _tf_fused_momentum(variable, buf, lr, step, momentum):
    """TensorFlow: ``buf = momentum * buf + step; w -= lr * buf`` as one ResourceApplyMomentum
    kernel instead of several elementwise ops. Not under a tf.distribute
    strategy, whose mirrored variables Keras updates through its own ``assign``; only where
    ``keras_fada.backend.fast_paths`` has ``tf_fused_momentum`` on."""
    if keras.backend.backend() != "tensorflow" or not fast_paths.enabled("tf_fused_momentum", variable.dtype):
        return False
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return False
    tf.raw_ops.ResourceApplyMomentum(
        var=variable.handle, accum=buf.handle, lr=lr, grad=step, momentum=momentum
    )
    return True


@keras.saving.register_keras_serializable(package="keras_fada")
class TorchAdam(_SlotsLikeWeights, keras.optimizers.Adam):
    """Adam with PyTorch's placement of epsilon, the official discriminator optimiser.

    ``torch.optim.Adam`` divides by ``sqrt(v_hat) + eps``; Keras' Adam folds the bias correction
    into the learning rate and divides by ``sqrt(v) + eps``, which amounts to an epsilon
    ``1 / sqrt(1 - beta_2^t)`` times larger (10x at the first step with beta_2 = 0.99).
    """

    def __init__(
        self, learning_rate=1e-4, beta_1=0.9, beta_2=0.99, epsilon=1e-8, name="torch_adam", **kwargs
    ):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name, **kwargs
        )

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m, v = keras_internals.adam_moments(self, variable)
        self.assign(m, self.beta_1 * m + (1 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1 - self.beta_2) * ops.square(gradient))
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = v / (1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        self.assign_sub(variable, lr * m_hat / (ops.sqrt(v_hat) + self.epsilon))


def poly_schedule(base_lr, max_iter, power=0.9):
    """``lr(it) = base_lr * (1 - it / max_iter) ** power``, 0 after ``max_iter``.

    Training may stop earlier (the official ``STOP_ITER``): the decay still runs over
    ``max_iter``, so the last learning rate is not 0 (about 40% of base at 40k of 62.5k).
    """
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=base_lr, decay_steps=int(max_iter), end_learning_rate=0.0, power=power
    )


def official_optimizers(
    base_lr=OFFICIAL["base_lr"],
    base_lr_d=OFFICIAL["base_lr_d"],
    max_iter=OFFICIAL["max_iter"],
    power=OFFICIAL["power"],
    momentum=OFFICIAL["momentum"],
    weight_decay=OFFICIAL["weight_decay"],
    classifier_lr_multiplier=OFFICIAL["classifier_lr_multiplier"],
    adam_betas=OFFICIAL["adam_betas"],
):
    """The three optimisers of ``train_adv.py``: F and C by SGD (C at 10x), D by Adam, all poly.

    Returns a dict with keys ``"optimizer"`` (feature extractor), ``"classifier_optimizer"``
    and ``"discriminator_optimizer"``, ready for ``model.compile(**official_optimizers())``.
    The paper states weight decay 1e-4; pass ``weight_decay=1e-4`` for that variant.
    """
    return {
        "optimizer": TorchSGD(poly_schedule(base_lr, max_iter, power), momentum, weight_decay),
        "classifier_optimizer": TorchSGD(
            poly_schedule(base_lr * classifier_lr_multiplier, max_iter, power), momentum, weight_decay
        ),
        "discriminator_optimizer": TorchAdam(
            poly_schedule(base_lr_d, max_iter, power), beta_1=adam_betas[0], beta_2=adam_betas[1]
        ),
    }


def learning_rate_schedule(optimizer):
    """The optimiser's learning rate as configured: a ``LearningRateSchedule`` (an equal copy,
    rebuilt from ``get_config()``) or a float."""
    lr = optimizer.get_config()["learning_rate"]
    if not isinstance(lr, dict):
        return lr
    try:
        return keras.optimizers.schedules.deserialize(lr)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"cannot rebuild the learning-rate schedule of optimizer {optimizer.name!r} from its config "
            f"(register its class with keras.saving.register_keras_serializable): {e}"
        ) from e


def learning_rate_at(optimizer, step=None):
    """The learning rate ``optimizer`` uses at ``step`` (default: its own iteration count)."""
    if step is None:
        return float(ops.convert_to_numpy(optimizer.learning_rate))
    lr = learning_rate_schedule(optimizer)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(step)
    return float(ops.convert_to_numpy(lr))


@keras.saving.register_keras_serializable(package="keras_fada")
class DynamicLossScale(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling for ``mixed_float16`` (an overflow skips the step and halves
    the scale; 2,000 finite steps double it), whose ``iterations`` counts every training step,
    skipped or not (Keras' wrapper reports the inner optimiser's updates), so that a backup's data
    position and a stage's step count stay the batches consumed; the learning-rate schedules
    still follow the updates made. Data parallel: an overflow on any device skips the step on all
    (torch processes and JAX shards check the summed gradients; the TensorFlow step shares each
    replica's verdict, ``tensorflow_two_pass.py``).

    The scale, its growth counter and the step count are optimiser variables: they are saved in
    weights files, ``BackupAndRestore`` backups and ``.keras`` files like the optimiser slots.

    Example:
    >>> opt = DynamicLossScale(TorchSGD(0.01))   # FADA.compile() wraps by itself under mixed_float16
    """

    def build(self, var_list):
        super().build(var_list)
        self.steps = self.add_variable(
            shape=(), dtype="int", initializer="zeros", aggregation="only_first_replica", name="steps"
        )

    @property
    def iterations(self):
        return self.steps if self.built else super().iterations

    def apply(self, grads, trainable_variables=None):
        super().apply(grads, trainable_variables)
        self.steps.assign_add(1)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        trainable, optimizer_variables = super().stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        i = [id(v) for v in self.variables].index(id(self.steps))
        optimizer_variables = list(optimizer_variables)
        optimizer_variables[i] = optimizer_variables[i] + 1
        return trainable, optimizer_variables
