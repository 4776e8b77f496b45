"""Class knowledge ``a`` for FADA's domain encodings (paper Section 3.3, Eq. 7 and 8)."""

import keras
from keras import layers, ops

from keras_fada import losses

MODES = ("soft", "hard", "binary")


@keras.saving.register_keras_serializable(package="keras_fada")
class DomainEncoder(layers.Layer):
    """Turns classifier logits into the class knowledge ``a`` that supervises the discriminator.

    * ``"soft"`` (FADA, Eq. 8): ``a = softmax(z / T)``, then every value above ``clip`` is set to
      ``clip``. As in the official code the vector is *not* renormalised afterwards, so confident
      pixels weigh a little less. ``clip=1.0`` turns clipping off (the paper's ablation uses
      0.7 / 0.8 / 0.9 / 1.0).
    * ``"hard"`` (Eq. 7): ``a = one_hot(argmax p)`` with ``p = softmax(z / T)``; pixels whose
      top probability is below ``threshold`` get ``a = 0`` and are therefore left out of the
      discriminator and adversarial losses. ``threshold=0`` keeps every pixel.
    * ``"binary"``: ``a = 1`` with a single channel: the traditional domain labels ``[1, 0]`` /
      ``[0, 1]``; pair it with ``FineGrainedDiscriminator(num_classes=1)``.

    The output is detached (``stop_gradient``): encodings are targets, never a path for
    gradients, exactly as ``soft_label.detach()`` in the official code.

    Args:
        mode: ``"soft"``, ``"hard"`` or ``"binary"``.
        temperature: T of Eq. 8 (official: 1.8).
        clip: upper bound on soft-label values (official: 0.9).
        threshold: minimum top-class probability for a hard label.

    Example:
    >>> encoder = DomainEncoder("soft", temperature=1.8, clip=0.9)
    >>> a = encoder(logits)                      # (N, H, W, K)
    >>> encoder.source_encoding(a).shape[-1]     # [a; 0]: 2K channels
    """

    def __init__(self, mode="soft", temperature=1.8, clip=0.9, threshold=0.9, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"DomainEncoder mode must be one of {MODES}, got {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.mode = mode
        self.temperature = float(temperature)
        self.clip = float(clip)
        self.threshold = float(threshold)

    def knowledge_channels(self, num_classes):
        """Channels of ``a``: K, or 1 for the binary baseline."""
        return 1 if self.mode == "binary" else int(num_classes)

    def call(self, logits):
        logits = ops.stop_gradient(ops.cast(logits, "float32"))
        if self.mode == "binary":
            return ops.ones_like(logits[..., :1])
        probs = ops.softmax(logits / self.temperature, axis=-1)
        if self.mode == "soft":
            return ops.minimum(probs, self.clip) if self.clip < 1.0 else probs
        num_classes = logits.shape[-1]
        one_hot = ops.one_hot(ops.argmax(probs, axis=-1), num_classes, dtype=probs.dtype)
        confident = ops.cast(ops.max(probs, axis=-1, keepdims=True) >= self.threshold, probs.dtype)
        return one_hot * confident

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.knowledge_channels(input_shape[-1]),)

    @staticmethod
    def source_encoding(a):
        """``[a; 0]`` (Eq. 5, source term)."""
        return losses.source_encoding(a)

    @staticmethod
    def target_encoding(a):
        """``[0; a]`` (Eq. 5, target term)."""
        return losses.target_encoding(a)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, temperature=self.temperature, clip=self.clip, threshold=self.threshold)
        return config
