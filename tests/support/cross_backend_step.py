"""Two FADA steps of the small DeepLabV2 on the backend named by KERAS_BACKEND, from weights
drawn by NumPy, written to an .npz: run once per backend by tests/test_cross_backend.py."""

import sys

import numpy as np

import keras_fada
from keras_fada.models import deeplabv2_resnet_small
from keras_fada.optimizers import official_optimizers


def main(out_path):
    segmentor = deeplabv2_resnet_small(num_classes=5)
    model = keras_fada.FADA(segmentor, lambda_adv=0.1)
    model.compile(**official_optimizers(base_lr=0.01, base_lr_d=1e-3, max_iter=20))
    rng = np.random.default_rng(0)
    for v in model.weights:  # identical initial state on every backend
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        else:
            v.assign((0.1 * rng.standard_normal(v.shape)).astype("float32"))
    labels = rng.integers(0, 5, (2, 33, 47)).astype("int32")
    labels[:, :4] = 255
    batch = {
        "source_images": rng.uniform(0, 255, (2, 33, 47, 3)).astype("float32"),
        "source_labels": labels,
        "target_images": rng.uniform(0, 255, (2, 41, 37, 3)).astype("float32"),
    }
    out = {}
    for step in range(2):
        model.reset_metrics()
        logs = model.train_on_batch(batch, return_dict=True)
        for name in ("seg_loss", "adv_loss", "d_loss"):
            out[f"step{step}/{name}"] = float(logs[name])
        if step == 0:  # D's first gradients (Adam's m after one step is 0.1 g)
            adam = model.stage_optimizers["discriminator_optimizer"]
            for i, m in enumerate(adam._momentums):
                out[f"first_m{i:03d}"] = np.asarray(m.numpy() if hasattr(m, "numpy") else m.value).copy()
    for i, v in enumerate(model.trainable_weights):
        out[f"w{i:03d}/{v.path}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v.value)
    adam = model.stage_optimizers["discriminator_optimizer"]
    for i, m in enumerate(adam._momentums):
        out[f"adam_m{i:03d}"] = np.asarray(m.numpy() if hasattr(m, "numpy") else m.value)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
