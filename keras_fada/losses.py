"""FADA's losses (paper Eq. 3, 5, 6) exactly as the official code computes them.

Conventions, all from ``train_adv.py`` of JDAI-CV/FADA:

* The discriminator emits ``2K`` logits per pixel, laid out ``[source K | target K]``. Its soft
  cross-entropy takes ``log_softmax`` over **all 2K channels jointly**, sums ``-target * log_prob``
  over channels and **averages over pixels** (N*H*W).
* Domain encodings are ``[a; 0]`` for source pixels and ``[0; a]`` for target pixels (Eq. 5); the
  adversarial loss scores target features against ``[a_t; 0]`` ("look like source, same class",
  Eq. 6).
* A pixel whose encoding is all zeros (hard encodings below the confidence threshold, Eq. 7)
  carries no information and is left out of the average. Soft and binary encodings never have
  such pixels, so for them the average is the official mean over all pixels.
* An empty average (no valid pixel) is 0, never NaN.
* ``with_count=True`` also returns the number of averaged pixels: a step that splits a batch
  over micro-batches or devices re-weights each part's mean by its count, so that the result is
  the mean over the whole batch (``keras_fada/models/fada/accumulation.py``).
"""

from keras import ops

IGNORE_INDEX = 255


def _masked_mean(values, mask, with_count=False):
    mask = ops.cast(mask, values.dtype)
    total = ops.sum(values * mask)
    count = ops.sum(mask)
    mean = total / ops.maximum(count, ops.ones_like(count))
    return (mean, count) if with_count else mean


def soft_cross_entropy(logits, targets, with_count=False):
    """Mean over pixels of ``-sum_c targets_c * log_softmax(logits)_c``.

    Args:
        logits: ``(..., C)`` discriminator logits (C = 2K).
        targets: ``(..., C)`` non-negative domain encodings; need not sum to one (the official
            clipping does not renormalise). Pixels whose targets are all zero are excluded.
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    per_pixel = -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)
    valid = ops.sum(targets, axis=-1) > 0
    return _masked_mean(per_pixel, valid, with_count)


def source_encoding(a):
    """``[a; 0]``: class knowledge ``a`` placed in the source half of the 2K channels."""
    return ops.concatenate([a, ops.zeros_like(a)], axis=-1)


def target_encoding(a):
    """``[0; a]``: class knowledge ``a`` placed in the target half of the 2K channels."""
    return ops.concatenate([ops.zeros_like(a), a], axis=-1)


def discriminator_loss(
    source_logits, target_logits, source_knowledge, target_knowledge, source_weight=0.5, target_weight=0.5
):
    """Eq. 5: the discriminator learns domain *and* class of each pixel.

    ``source_weight * CE(D(f_s), [a_s; 0]) + target_weight * CE(D(f_t), [0; a_t])``; the official
    code weights the two domains 0.5 / 0.5 (the paper writes a plain sum: weights 1 / 1).
    """
    return source_weight * soft_cross_entropy(source_logits, source_encoding(source_knowledge)) + (
        target_weight * soft_cross_entropy(target_logits, target_encoding(target_knowledge))
    )


def adversarial_loss(target_logits, target_knowledge, with_count=False):
    """Eq. 6: target features should be classified as *source* features of the same class."""
    return soft_cross_entropy(target_logits, source_encoding(target_knowledge), with_count)


def segmentation_loss(logits, labels, ignore_index=IGNORE_INDEX, temperature=1.0, with_count=False):
    """Pixel-wise cross-entropy (Eq. 3), mean over pixels whose label is not ``ignore_index``.

    Args:
        logits: ``(N, H, W, K)`` class logits at the label resolution.
        labels: ``(N, H, W)`` or ``(N, H, W, 1)`` integer train ids; ``ignore_index`` is skipped.
        temperature: the logits are divided by it first. The official adversarial stage trains
            the source segmentation loss on ``logits / 1.8``; the other stages use 1.
    """
    logits = ops.cast(logits, "float32")
    if temperature != 1.0:
        logits = logits / temperature
    labels = ops.cast(labels, "int32")
    if len(labels.shape) == len(logits.shape):
        labels = ops.squeeze(labels, axis=-1)
    num_classes = logits.shape[-1]
    # Anything that is not a train id (255, or a stray value a label map missed) is ignored,
    # never silently read as some class.
    valid = ops.logical_and(ops.logical_and(labels >= 0, labels < num_classes), labels != ignore_index)
    safe_labels = ops.where(valid, labels, ops.zeros_like(labels))
    log_probs = ops.log_softmax(logits, axis=-1)
    picked = ops.take_along_axis(log_probs, ops.expand_dims(safe_labels, -1), axis=-1)
    return _masked_mean(-ops.squeeze(picked, axis=-1), valid, with_count)
