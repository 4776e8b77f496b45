"""Independent NumPy references for FADA's maths, written from the paper and the official code.

Nothing here imports keras_fada: these are the yardsticks the Keras code is measured against.
"""

import numpy as np


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def resize_align_corners(x, out_h, out_w):
    """PyTorch F.interpolate(bilinear, align_corners=True), pixel by pixel, NHWC."""
    n, h, w, c = x.shape
    out = np.zeros((n, out_h, out_w, c), dtype=np.float64)
    for i in range(out_h):
        y = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        dy = y - y0
        for j in range(out_w):
            xx = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = int(np.floor(xx))
            x1 = min(x0 + 1, w - 1)
            dx = xx - x0
            out[:, i, j] = (
                (1 - dy) * (1 - dx) * x[:, y0, x0]
                + (1 - dy) * dx * x[:, y0, x1]
                + dy * (1 - dx) * x[:, y1, x0]
                + dy * dx * x[:, y1, x1]
            )
    return out


def conv3x3_same(x, kernel, bias):
    """3x3 stride-1 convolution with zero padding 1, NHWC input, HWIO kernel."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]), dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nhwi,io->nhwo", padded[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
    return out + bias


def leaky_relu(x, slope=0.2):
    return np.where(x >= 0, x, slope * x)


def soft_cross_entropy(logits, targets):
    """train_adv.py's soft_label_cross_entropy: sum over channels, mean over all pixels."""
    per_pixel = -(targets * log_softmax(logits)).sum(-1)
    return per_pixel.mean()


def soft_labels(logits, temperature=1.8, clip=0.9):
    """src_soft_label = softmax(pred / T); src_soft_label[src_soft_label > clip] = clip."""
    q = softmax(logits / temperature)
    q[q > clip] = clip
    return q


def cross_entropy_ignore(logits, labels, ignore=255):
    """nn.CrossEntropyLoss(ignore_index=255): mean over non-ignored pixels."""
    logp = log_softmax(logits)
    losses = []
    for idx in np.ndindex(labels.shape):
        if labels[idx] != ignore:
            losses.append(-logp[idx][labels[idx]])
    return float(np.mean(losses)) if losses else 0.0
