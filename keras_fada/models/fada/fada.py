"""The FADA adversarial stage (paper Section 3, official ``train_adv.py``) as a ``keras.Model``."""

import keras
from keras import ops

from keras_fada import losses
from keras_fada import optimizers as fada_optimizers
from keras_fada.layers import DomainEncoder, FineGrainedDiscriminator
from keras_fada.models.fada.segmentation_trainer import SegmentationTrainer

RESOLUTIONS = ("label", "feature")


@keras.saving.register_keras_serializable(package="keras_fada")
class FADA(SegmentationTrainer):
    """Fine-grained adversarial domain adaptation: ``model.fit`` trains G = C∘F and D together.

    One training step is one iteration of the official loop:

    1. source forward, segmentation loss on ``logits / T`` (labels at full resolution);
    2. class knowledge ``a_s`` and ``a_t`` from the detached, upsampled logits of both domains
       (``encoder``: soft / hard / binary);
    3. target forward and ``lambda_adv * L_adv`` (Eq. 6) through D into F only: the classifier
       gets no target gradient, and D's weights get none from this loss;
    4. the discriminator loss (Eq. 5, 0.5 / 0.5) on the detached *pre-update* features with
       ``[a_s; 0]`` and ``[0; a_t]``;
    5. update F and C (SGD) and D (Adam).

    Every gradient of the official iteration is taken at the pre-update weights (D's update
    sees the features computed before F's step, and the adversarial loss sees D before its
    step), so the whole iteration is a single backward pass of
    ``L_seg + lambda_adv * L_adv + L_D`` in which ``L_adv`` reaches D only through frozen weights
    and ``L_D`` sees stop-gradient features. The update is identical to the official order, it
    skips the D weight-gradient pass that the official loop computes and discards. By default
    (``two_pass``) the same sum is back-propagated in two passes, ``L_seg`` first, which frees
    the source activations before the target pass (``{torch,tensorflow,jax}_two_pass.py``).

    Batches are dicts::

        {"source_images": float32 (N, H, W, 3) RGB in [0, 255],
         "source_labels": int (N, H, W) train ids, 255 = ignore,
         "target_images": float32 (M, H', W', 3) RGB in [0, 255]}

    (a 1-tuple ``(dict,)`` from a Python generator). Logged: ``seg_loss``, ``adv_loss``, ``d_loss``
    and ``loss`` (= seg + lambda_adv * adv + d).

    Args:
        segmentor: G = C∘F with ``feature_extractor`` and ``classifier`` attributes.
        discriminator: a ``FineGrainedDiscriminator`` on F's output; by default one with the
            encoder's number of knowledge channels (K, or 1 for ``mode="binary"``).
        encoder: a ``DomainEncoder`` (default: soft, T = 1.8, clip 0.9 as the official code).
        lambda_adv: weight of the adversarial loss (official: 0.001).
        source_temperature: the source logits are divided by it in the segmentation loss
            (official quirk: 1.8; the paper's variant: 1.0).
        discriminator_resolution: ``"label"`` (official) upsamples D's outputs (align_corners)
            to the label resolution and computes the encodings from upsampled logits;
            ``"feature"`` keeps D's stride-8 outputs and computes the encodings from stride-8
            logits, which is cheaper.
        discriminator_weights: weights of the source and target terms of Eq. 5 (official
            0.5 / 0.5; the paper's plain sum is 1 / 1).
        align_corners: resize convention of every upsampling (official: True).
        two_pass: back-propagate ``L_seg`` before the target forward pass (as the official
            loop does), so the source activations are freed before the target ones exist: the
            same gradients, less peak memory. ``False``: Keras' own single-pass step.

    Example:
    >>> model = FADA(segmentor, lambda_adv=0.001)
    >>> model.compile()                       # official optimisers, poly LR over 62,500 steps
    >>> model.fit(batches, epochs=1, steps_per_epoch=40000)
    >>> logits = model.predict(images)        # the adapted segmentor, at image resolution
    """

    def __init__(
        self,
        segmentor,
        discriminator=None,
        encoder=None,
        lambda_adv=0.001,
        source_temperature=1.8,
        discriminator_resolution="label",
        discriminator_weights=(0.5, 0.5),
        align_corners=True,
        two_pass=True,
        **kwargs,
    ):
        if discriminator_resolution not in RESOLUTIONS:
            raise ValueError(
                f"discriminator_resolution must be one of {RESOLUTIONS}, got {discriminator_resolution!r}"
            )
        encoder = encoder if encoder is not None else DomainEncoder("soft", temperature=1.8, clip=0.9)
        knowledge = encoder.knowledge_channels(segmentor.num_classes)
        if discriminator is None:
            discriminator = FineGrainedDiscriminator(num_classes=knowledge)
        if discriminator.num_classes != knowledge:
            raise ValueError(
                f"the discriminator has {discriminator.num_classes}+{discriminator.num_classes} outputs but "
                f"the {encoder.mode!r} encoder gives {knowledge} knowledge channels"
            )
        if not discriminator.built:
            discriminator.build((None, None, None, _feature_channels(segmentor)))
        super().__init__(segmentor, temperature=source_temperature, align_corners=align_corners, **kwargs)
        self.encoder = encoder
        self.discriminator = discriminator
        self.built = all(part is not None and part.built for part in self._networks())
        self.lambda_adv = float(lambda_adv)
        self.discriminator_resolution = discriminator_resolution
        self.discriminator_weights = tuple(float(w) for w in discriminator_weights)
        self.two_pass = bool(two_pass)
        self.adversarial_loss_metric = keras.metrics.Mean(name="adv_loss")
        self.discriminator_loss_metric = keras.metrics.Mean(name="d_loss")

    def _networks(self):
        return [self.segmentor, getattr(self, "discriminator", None)]

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=False):
        """Segmentation logits for an image batch; all training outputs for a FADA batch dict."""
        if isinstance(inputs, dict):
            return self.adaptation_outputs(inputs, training=training)
        return super().call(inputs, training=training)

    def adaptation_outputs(self, batch, training=True):
        """Everything one FADA iteration needs, computed once (see the class docstring)."""
        source = self.source_outputs(batch, training=training)
        return {**source, **self.target_outputs(batch, training=training)}

    def _at_labels(self):
        return self.discriminator_resolution == "label"

    def _to_output(self, x, size):
        return self.upsample(x, size) if self._at_labels() else x

    def source_outputs(self, batch, training=True):
        """Source pass: features, upsampled logits (for L_seg), the detached knowledge ``a_s``
        and D's source term (Eq. 5) on the detached features."""
        source_features = self.segmentor.feature_extractor(batch["source_images"], training=training)
        source_logits_lowres = self.segmentor.classifier(source_features, training=training)
        source_size = batch["source_labels"].shape[1:3]
        source_logits = self.upsample(source_logits_lowres, source_size)
        return {
            "source_features": source_features,
            "source_logits": source_logits,
            "source_knowledge": self.encoder(source_logits if self._at_labels() else source_logits_lowres),
            # Eq. 5: D learns from features that are constants for F.
            "discriminator_source_logits": self._to_output(
                self.discriminator(ops.stop_gradient(source_features)), source_size
            ),
        }

    def target_outputs(self, batch, source=None, training=True):
        """Target pass: ``a_t``, L_adv's logits and D's target term; needs nothing of the source
        pass (``source`` is accepted for compatibility)."""
        target_size = batch["target_images"].shape[1:3]
        to_output = self._to_output

        target_features = self.segmentor.feature_extractor(batch["target_images"], training=training)
        # The target classifier output only yields the (detached) encoding.
        target_logits = to_output(
            self.segmentor.classifier(ops.stop_gradient(target_features), training=training), target_size
        )
        return {
            "target_knowledge": self.encoder(target_logits),
            # Eq. 6: gradients reach F through D's frozen weights.
            "adversarial_logits": to_output(self.discriminator(target_features, frozen=True), target_size),
            "discriminator_target_logits": to_output(
                self.discriminator(ops.stop_gradient(target_features)), target_size
            ),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(x, dict):  # evaluate() on (images, labels): the segmentation loss only
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        terms = {**self._terms(0, x, y_pred), **self._terms(1, x, y_pred)}
        means = {name: mean for name, (mean, _) in terms.items()}
        return self._with_layer_losses(self.update_loss_metrics({**means, "penalty": 0.0}))

    # ------------------------------------------------------------------ split steps
    pass_names = ("source", "target")

    def _terms(self, index, batch, out):
        """``{name: (mean, count)}`` of the losses of pass ``index`` (0: source, 1: target)."""
        if index == 0:
            return {
                # L_seg on the source logits (divided by ``source_temperature``).
                "seg": losses.segmentation_loss(
                    out["source_logits"],
                    batch["source_labels"],
                    temperature=self.temperature,
                    with_count=True,
                ),
                "d_source": losses.soft_cross_entropy(
                    out["discriminator_source_logits"],
                    losses.source_encoding(out["source_knowledge"]),
                    with_count=True,
                ),
            }
        return {
            "adv": losses.adversarial_loss(
                out["adversarial_logits"], out["target_knowledge"], with_count=True
            ),
            "d_target": losses.soft_cross_entropy(
                out["discriminator_target_logits"],
                losses.target_encoding(out["target_knowledge"]),
                with_count=True,
            ),
        }

    def pass_terms(self, index, x, y=None):
        """Pass 0: ``L_seg + w_s CE(D(f_s), [a_s; 0])``; pass 1: ``lambda_adv L_adv + w_t CE(D(f_t),
        [0; a_t])`` and the weight penalties. Returns ``(terms, loss)`` as SegmentationTrainer."""
        source_weight, target_weight = self.discriminator_weights
        if index == 0:
            terms = self._terms(0, x, self.source_outputs(x, training=True))
            return terms, terms["seg"][0] + source_weight * terms["d_source"][0]
        terms = self._terms(1, x, self.target_outputs(x, training=True))
        penalty = self._with_layer_losses(ops.zeros((), "float32"))
        terms["penalty"] = (penalty, ops.ones((), "float32"))
        return terms, self.lambda_adv * terms["adv"][0] + target_weight * terms["d_target"][0] + penalty

    def pass_groups(self, index):
        # L_adv and D's target term average the same (target) pixels, so pass 1 has one count.
        if index == 1:
            return ["adv"] * len(self.trainable_variables)
        d_ids = {id(v) for v in self.discriminator.trainable_variables}
        return ["d_source" if id(v) in d_ids else "seg" for v in self.trainable_variables]

    def update_loss_metrics(self, means):
        source_weight, target_weight = self.discriminator_weights
        disc = source_weight * means["d_source"] + target_weight * means["d_target"]
        self.segmentation_loss_metric.update_state(means["seg"])
        self.adversarial_loss_metric.update_state(means["adv"])
        self.discriminator_loss_metric.update_state(disc)
        return means["seg"] + self.lambda_adv * means["adv"] + disc + means["penalty"]

    def train_step(self, *args):
        # (data) on TF and torch, (state, data) on JAX's stateless trainer.
        if self.two_pass:
            return super().train_step(*args)  # SegmentationTrainer's split step
        if self.uses_split_step():
            raise ValueError("accumulation_steps > 1 and several devices need two_pass=True")
        return keras.Model.train_step(self, *args)

    def uses_split_step(self):
        return self.two_pass or super().uses_split_step()

    def make_train_function(self, force=False):
        # JAX: the two passes as two XLA programs (one program interleaves them, see jax_two_pass).
        if not self._jax_two_programs():
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        from keras_fada.backend import keras_internals
        from keras_fada.models.fada import jax_two_pass

        # Built here, not by Keras' trainer, which may jit the whole step as one program.
        step = jax_two_pass.compiled_train_step(self)
        self.train_function = keras_internals.jax_train_function(self, step)
        return self.train_function

    def _jax_two_programs(self):
        if not (self.two_pass and keras.backend.backend() == "jax"):
            return False
        return not self.run_eagerly and bool(self.jit_compile)

    # ------------------------------------------------------------------ optimisation
    def _optimizer_groups(self):
        return [
            *super()._optimizer_groups(),
            ("discriminator_optimizer", self.discriminator.trainable_variables),
        ]

    def _default_optimizers(self):
        return fada_optimizers.official_optimizers()

    def compile(
        self,
        optimizer=None,
        classifier_optimizer=None,
        discriminator_optimizer=None,
        classifier_lr_multiplier=10.0,
        **kwargs,
    ):
        """As ``SegmentationTrainer.compile``, plus D's optimiser (official: Adam(1e-4, 0.9/0.99), poly)."""
        given = {
            "optimizer": optimizer,
            "classifier_optimizer": classifier_optimizer,
            "discriminator_optimizer": discriminator_optimizer,
        }
        self._compile_optimizers(self._resolve_optimizers(given, classifier_lr_multiplier), **kwargs)

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        config.pop("temperature")
        config.update(
            discriminator=keras.saving.serialize_keras_object(self.discriminator),
            encoder=keras.saving.serialize_keras_object(self.encoder),
            lambda_adv=self.lambda_adv,
            source_temperature=self.temperature,
            discriminator_resolution=self.discriminator_resolution,
            discriminator_weights=list(self.discriminator_weights),
            two_pass=self.two_pass,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("discriminator", "encoder"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return super().from_config(config)


def _feature_channels(segmentor):
    channels = getattr(segmentor, "feature_channels", None)
    if channels is None:
        channels = segmentor.feature_extractor.output.shape[-1]
    return int(channels)
