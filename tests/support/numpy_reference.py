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
    """PyTorch F.interpolate(bilinear, align_corners=True) by its textbook formula, NHWC:
    each output pixel blends its four neighbours at source coordinate i * (in - 1) / (out - 1)."""
    n, h, w, c = x.shape

    def coords(out, size):
        src = np.arange(out) * ((size - 1) / (out - 1) if out > 1 else 0.0)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, size - 1), src - lo

    y0, y1, dy = coords(out_h, h)
    x0, x1, dx = coords(out_w, w)
    dy, dx = dy[None, :, None, None], dx[None, None, :, None]
    top = (1 - dx) * x[:, y0][:, :, x0] + dx * x[:, y0][:, :, x1]
    bottom = (1 - dx) * x[:, y1][:, :, x0] + dx * x[:, y1][:, :, x1]
    return (1 - dy) * top + dy * bottom


def conv2d(x, kernel, stride=1, pad=0, dilation=1):
    """Any-kernel convolution with symmetric zero padding ``pad``, NHWC input, HWIO kernel."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h = (padded.shape[1] - dilation * (kh - 1) - 1) // stride + 1
    out_w = (padded.shape[2] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]), dtype=np.float64)
    for dy in range(kh):
        for dx in range(kw):
            window = padded[
                :,
                dy * dilation : dy * dilation + stride * (out_h - 1) + 1 : stride,
                dx * dilation : dx * dilation + stride * (out_w - 1) + 1 : stride,
            ]
            out += np.einsum("nhwi,io->nhwo", window, kernel[dy, dx])
    return out


def conv3x3_same(x, kernel, bias, dilation=1):
    """3x3 stride-1 convolution with zero padding = dilation, NHWC input, HWIO kernel."""
    return conv2d(x, kernel, pad=dilation, dilation=dilation) + bias


def avg_pool2(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def numerical_gradient(fn, params, eps=1e-6):
    """Central differences of a scalar ``fn(params)`` for every entry of a dict of arrays."""
    grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + eps
            up = fn(params)
            value[idx] = old - eps
            down = fn(params)
            value[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


def torch_sgd(weights, grads, buffers, lr, momentum=0.9, weight_decay=5e-4):
    """torch.optim.SGD step (L2 decay in the gradient, dampening 0), in place on dicts."""
    for name in weights:
        step = grads[name] + weight_decay * weights[name]
        buffers[name] = step if name not in buffers else momentum * buffers[name] + step
        weights[name] = weights[name] - lr * buffers[name]


def torch_adam(weights, grads, state, lr, t, beta1=0.9, beta2=0.99, eps=1e-8):
    """torch.optim.Adam step (no weight decay) at 1-based step t, in place on dicts."""
    for name in weights:
        m, v = state.get(name, (0.0, 0.0))
        m = beta1 * m + (1 - beta1) * grads[name]
        v = beta2 * v + (1 - beta2) * grads[name] ** 2
        state[name] = (m, v)
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        weights[name] = weights[name] - lr * m_hat / (np.sqrt(v_hat) + eps)


def poly_lr(base, it, max_iter, power=0.9):
    return base * (1 - it / max_iter) ** power


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
    """nn.CrossEntropyLoss(ignore_index=255): mean over non-ignored pixels (0 if there are none)."""
    valid = labels != ignore
    if not valid.any():
        return 0.0
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return float(-picked[valid].mean())
