"""A tiny FADA setup shared by the model tests, and its NumPy twin."""

import keras
import numpy as np

import keras_fada
from keras_fada.models import ASPPClassifier, Segmentor
from keras_fada.optimizers import official_optimizers
from tests.support import numpy_reference as ref

K = 3
DILATIONS = (1, 2)
CONFIG = dict(lambda_adv=0.5, temperature=1.8, clip=0.9, base_lr=0.01, base_lr_d=0.01, max_iter=10)


def tiny_segmentor(num_classes=K):
    """F = relu(conv3x3(avgpool2(x))) (stride 2), C = a two-branch ASPP."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.AveragePooling2D(2)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="f_conv")(x)
    features = keras.Model(inputs, x, name="feature_extractor")
    return Segmentor(features, ASPPClassifier(num_classes, dilations=DILATIONS, kernel_stddev=0.3))


def tiny_fada(mode="soft", **kwargs):
    keras.utils.set_random_seed(7)
    encoder = keras_fada.DomainEncoder(
        mode, temperature=CONFIG["temperature"], clip=CONFIG["clip"], threshold=0.5
    )
    disc = keras_fada.FineGrainedDiscriminator(encoder.knowledge_channels(K), filters=(4, 3))
    model = keras_fada.FADA(tiny_segmentor(), disc, encoder, lambda_adv=CONFIG["lambda_adv"], **kwargs)
    model.compile(
        **official_optimizers(
            base_lr=CONFIG["base_lr"], base_lr_d=CONFIG["base_lr_d"], max_iter=CONFIG["max_iter"]
        )
    )
    return model


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=(2, 8, 8)).astype("int32")
    labels[0, :2] = 255
    return {
        "source_images": rng.normal(size=(2, 8, 8, 3)).astype("float32"),
        "source_labels": labels,
        "target_images": rng.normal(size=(2, 8, 10, 3)).astype("float32"),
    }


def model_params(model):
    """Name -> NumPy array of every trainable weight of the tiny FADA model."""
    np_ = keras.ops.convert_to_numpy
    seg, disc = model.segmentor, model.discriminator
    conv = seg.feature_extractor.get_layer("f_conv")
    params = {"f_k": np_(conv.kernel), "f_b": np_(conv.bias)}
    for i, layer in enumerate(seg.classifier.conv2d_list):
        params[f"c{i}_k"], params[f"c{i}_b"] = np_(layer.kernel), np_(layer.bias)
    for j, layer in enumerate([*disc.hidden, disc.source_head, disc.target_head]):
        params[f"d{j}_k"], params[f"d{j}_b"] = np_(layer.kernel), np_(layer.bias)
    return {k: v.astype(np.float64) for k, v in params.items()}


# ------------------------------------------------------------------ NumPy twin of the network
def np_features(p, x):
    return np.maximum(ref.conv3x3_same(ref.avg_pool2(x), p["f_k"], p["f_b"]), 0.0)


def np_classify(p, f):
    return sum(ref.conv3x3_same(f, p[f"c{i}_k"], p[f"c{i}_b"], d) for i, d in enumerate(DILATIONS))


def np_discriminate(p, f):
    h = f
    for j in (0, 1):
        h = ref.leaky_relu(ref.conv3x3_same(h, p[f"d{j}_k"], p[f"d{j}_b"]), 0.2)
    return np.concatenate(
        [ref.conv3x3_same(h, p["d2_k"], p["d2_b"]), ref.conv3x3_same(h, p["d3_k"], p["d3_b"])], -1
    )


def reference_iterations(params, batch, steps, weight_decay=5e-4):
    """``steps`` official FADA iterations (train_adv.py order) with finite-difference gradients."""
    p = {k: v.copy() for k, v in params.items()}
    xs, ys, xt = (batch[k].astype(np.float64) for k in ("source_images", "source_labels", "target_images"))
    ys = batch["source_labels"]
    s_size, t_size = ys.shape[1:3], xt.shape[1:3]
    T, clip, lam = CONFIG["temperature"], CONFIG["clip"], CONFIG["lambda_adv"]
    sgd_f, sgd_c, adam, history = {}, {}, {}, []
    for t in range(steps):
        f_s, f_t = np_features(p, xs), np_features(p, xt)
        a_s = ref.soft_labels(ref.resize_align_corners(np_classify(p, f_s), *s_size), T, clip)
        a_t = ref.soft_labels(ref.resize_align_corners(np_classify(p, f_t), *t_size), T, clip)
        zeros = np.zeros_like(a_t)

        def seg_loss(q):
            logits = ref.resize_align_corners(np_classify(q, np_features(q, xs)), *s_size)
            return ref.cross_entropy_ignore(logits / T, ys)

        def adv_loss(q):  # D is held at the current weights p
            d = ref.resize_align_corners(np_discriminate(p, np_features(q, xt)), *t_size)
            return ref.soft_cross_entropy(d, np.concatenate([a_t, zeros], -1))

        def d_loss(q):  # pre-update features, detached
            d_s = ref.resize_align_corners(np_discriminate(q, f_s), *s_size)
            d_t = ref.resize_align_corners(np_discriminate(q, f_t), *t_size)
            return 0.5 * ref.soft_cross_entropy(d_s, np.concatenate([a_s, np.zeros_like(a_s)], -1)) + (
                0.5 * ref.soft_cross_entropy(d_t, np.concatenate([zeros, a_t], -1))
            )

        history.append({"seg_loss": seg_loss(p), "adv_loss": adv_loss(p), "d_loss": d_loss(p)})
        g_names = [n for n in p if n[0] in "fc"]
        d_names = [n for n in p if n[0] == "d"]
        g_grads = ref.numerical_gradient(
            lambda q: seg_loss({**p, **q}) + lam * adv_loss({**p, **q}), {n: p[n].copy() for n in g_names}
        )
        d_grads = ref.numerical_gradient(lambda q: d_loss({**p, **q}), {n: p[n].copy() for n in d_names})
        lr = ref.poly_lr(CONFIG["base_lr"], t, CONFIG["max_iter"])
        lr_d = ref.poly_lr(CONFIG["base_lr_d"], t, CONFIG["max_iter"])
        f_w = {n: p[n] for n in g_names if n[0] == "f"}
        c_w = {n: p[n] for n in g_names if n[0] == "c"}
        d_w = {n: p[n] for n in d_names}
        ref.torch_sgd(f_w, g_grads, sgd_f, lr, weight_decay=weight_decay)
        ref.torch_sgd(c_w, g_grads, sgd_c, 10 * lr, weight_decay=weight_decay)
        ref.torch_adam(d_w, d_grads, adam, lr_d, t + 1)
        p.update(f_w)
        p.update(c_w)
        p.update(d_w)
    return p, history


def discriminator_gradient(params, batch):
    """Finite-difference gradient of L_D (Eq. 5, 0.5/0.5) w.r.t. D at ``params``' features."""
    xs, xt = (batch[k].astype(np.float64) for k in ("source_images", "target_images"))
    s_size, t_size = batch["source_labels"].shape[1:3], xt.shape[1:3]
    T, clip = CONFIG["temperature"], CONFIG["clip"]
    f_s, f_t = np_features(params, xs), np_features(params, xt)
    a_s = ref.soft_labels(ref.resize_align_corners(np_classify(params, f_s), *s_size), T, clip)
    a_t = ref.soft_labels(ref.resize_align_corners(np_classify(params, f_t), *t_size), T, clip)

    def d_loss(q):
        d_s = ref.resize_align_corners(np_discriminate(q, f_s), *s_size)
        d_t = ref.resize_align_corners(np_discriminate(q, f_t), *t_size)
        return 0.5 * ref.soft_cross_entropy(d_s, np.concatenate([a_s, 0 * a_s], -1)) + 0.5 * (
            ref.soft_cross_entropy(d_t, np.concatenate([0 * a_t, a_t], -1))
        )

    d_params = {n: params[n].copy() for n in params if n[0] == "d"}
    return ref.numerical_gradient(lambda q: d_loss({**params, **q}), d_params)


def train_steps(model, batch, steps):
    """Run ``steps`` training steps on the same batch; the logged losses of each."""
    logs = []
    for _ in range(steps):
        model.reset_metrics()
        out = model.train_on_batch(batch, return_dict=True)
        logs.append({k: float(v) for k, v in out.items()})
    return logs
