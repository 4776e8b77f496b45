"""Seconds per FADA training iteration of keras-fada (full DeepLabV2-R101, K=19, official recipe)
on the backend named by KERAS_BACKEND, measured like the PyTorch reference
(../shared/reference/torch-reference/torch_fada_step.py): one JSON line on stdout.

    KERAS_BACKEND=tensorflow python benchmarks/fada_step.py --batch 1 --height 256 --width 512 --iters 7
    KERAS_BACKEND=jax python benchmarks/fada_step.py --net small --iters 5

An iteration is "quiet" when other processes used < 5% of its wall time (/proc/stat busy time
minus our own os.times()); the median is taken over quiet timed iterations when there are any.
Frozen-BN gammas are set to 0.5 so activations stay finite (values only; the work is the same).

``--without jax torch`` measures the process as it is in an install without those packages (e.g.
``pip install keras-fada[torch]``, which has no JAX): Keras 3.15 imports JAX whenever it is
installed, which adds RSS to a torch or TensorFlow process that never uses it. The packages are
hidden from the import system before Keras is imported, so keras-fada must run without them.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

# `--without` must act before Keras is imported, so it has its own parser, read first; main's parser
# takes it as a parent, for --help and so that the rest of the command line is checked as usual.
WITHOUT = argparse.ArgumentParser(add_help=False)
WITHOUT.add_argument(
    "--without",
    nargs="+",
    default=[],
    choices=["jax", "torch"],  # TensorFlow is a dependency of every install (tf.data)
    metavar="PACKAGE",
    help="measure as in an install without these optional backends (e.g. jax for keras-fada[torch])",
)
HIDDEN = WITHOUT.parse_known_args()[0].without
for _name in HIDDEN:
    if _name == os.environ.get("KERAS_BACKEND", "tensorflow"):
        raise SystemExit(f"--without {_name}: that is the backend being measured")
    sys.modules[_name] = None  # `import <name>` now raises ImportError, as when it is not installed

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_fada  # noqa: E402
from keras_fada.models import deeplabv2_resnet101, deeplabv2_resnet_small  # noqa: E402
from keras_fada.models.deeplabv2 import FrozenBatchNormalization  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def busy_seconds():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK


def own_seconds():
    t = os.times()
    return t.user + t.system


def device_name():
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return gpus[0].name if gpus else "cpu"


def set_tf32(allowed):
    """TF32 matmuls/convolutions on or off in this backend (the reference's default: off)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if allowed else "highest")
    else:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(allowed)


def peak_gpu_mib():
    """Peak accelerator memory of this process in MiB (None on a CPU)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
        return stats["peak_bytes_in_use"] / 2**20 if stats else None
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def current_rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_everything(seed):
    """``keras.utils.set_random_seed`` without importing TensorFlow into a torch or JAX process.

    Keras seeds TensorFlow too whenever it is installed, which imports it: RSS that a training
    step on another backend never uses (the reference process has no TensorFlow)."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def timed_iterations(step, iters):
    """Wall time and other processes' CPU time of each call of ``step``."""
    rows = []
    for _ in range(iters):
        b0, o0, t0 = busy_seconds(), own_seconds(), time.perf_counter()
        step()
        wall = time.perf_counter() - t0
        own = own_seconds() - o0
        rows.append(
            {"wall": wall, "foreign_cpu": max(busy_seconds() - b0 - own, 0.0), "peak_rss": peak_rss_mib()}
        )
    return rows


def quiet_median(rows, warmup):
    timed = rows[warmup:]
    quiet = [r["wall"] for r in timed if r["foreign_cpu"] < 0.05 * r["wall"]]
    return statistics.median(quiet or [r["wall"] for r in timed])


class DiscriminatorStep(keras.Model):
    """The discriminator update alone (Eq. 5 on given features and encodings), for the phase profile."""

    def __init__(self, fada, **kwargs):
        super().__init__(**kwargs)
        self.fada = fada

    def call(self, x, training=False):
        d = self.fada.discriminator
        return {
            "s": self.fada.upsample(d(x["source_features"]), x["source_knowledge"].shape[1:3]),
            "t": self.fada.upsample(d(x["target_features"]), x["target_knowledge"].shape[1:3]),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return keras_fada.losses.discriminator_loss(
            y_pred["s"], y_pred["t"], x["source_knowledge"], x["target_knowledge"]
        )


def profile_phases(model, batch, args):
    """Source pass (source-only step: F+C forward, CE backward, SGD), D update (two D forward/backward
    passes at the official resolution + Adam); the target pass is what remains of the FADA step."""
    source = keras_fada.SegmentationTrainer(model.segmentor, temperature=model.temperature)
    source.compile(jit_compile=model.jit_compile)
    source_rows = timed_iterations(
        lambda: source.train_on_batch(batch["source_images"], batch["source_labels"]), args.iters
    )
    rng = np.random.default_rng(1)
    fshape = (args.batch, -(-args.height // 8), -(-args.width // 8), model.segmentor.feature_channels)
    knowledge = rng.dirichlet(np.ones(19), (args.batch, args.height, args.width)).astype("float32")
    d_batch = {
        "source_features": rng.standard_normal(fshape).astype("float32"),
        "target_features": rng.standard_normal(fshape).astype("float32"),
        "source_knowledge": knowledge,
        "target_knowledge": knowledge[::-1].copy(),
    }
    d_step = DiscriminatorStep(model)
    d_step.compile(
        optimizer=keras_fada.optimizers.TorchAdam(1e-4, beta_1=0.9, beta_2=0.99),
        jit_compile=model.jit_compile,
    )
    d_rows = timed_iterations(lambda: d_step.train_on_batch(d_batch), args.iters)
    return {
        "source_pass_step": round(quiet_median(source_rows, args.warmup), 3),
        "discriminator_update": round(quiet_median(d_rows, args.warmup), 3),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[WITHOUT])
    p.add_argument("--net", choices=["resnet101", "small"], default="resnet101")
    p.add_argument("--batch", type=int, default=1, help="images per domain")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--iters", type=int, default=7, help="total iterations incl. warm-up")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32")
    p.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto")
    p.add_argument(
        "--single-pass",
        action="store_true",
        help="one backward pass of the summed loss instead of FADA's default two passes",
    )
    p.add_argument(
        "--phases",
        action="store_true",
        help="also time the source pass alone (source-only step) and the discriminator update alone; "
        "the target pass is the rest of the FADA step",
    )
    p.add_argument(
        "--tf32", action="store_true", help="allow TF32 in float32 on GPUs (off: float32 means float32)"
    )
    args = p.parse_args()

    set_tf32(args.tf32)
    keras.config.set_dtype_policy(args.precision)
    seed_everything(0)
    build = deeplabv2_resnet101 if args.net == "resnet101" else deeplabv2_resnet_small
    segmentor = build(19)
    for layer in segmentor.feature_extractor.layers:
        if isinstance(layer, FrozenBatchNormalization):
            layer.gamma.assign(np.full(layer.gamma.shape, 0.5, "float32"))
    model = keras_fada.FADA(segmentor, two_pass=not args.single_pass)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(jit_compile=jit)

    rss_after_build = current_rss_mib()
    rng = np.random.default_rng(0)
    shape = (args.batch, args.height, args.width)
    labels = rng.integers(0, 19, shape).astype("int32")
    labels[rng.random(shape) < 0.1] = 255
    batch = {
        "source_images": rng.uniform(0, 255, (*shape, 3)).astype("float32"),
        "source_labels": labels,
        "target_images": rng.uniform(0, 255, (*shape, 3)).astype("float32"),
    }
    losses = []

    def fada_step():
        logs = model.train_on_batch(batch, return_dict=True)  # returns host floats: the step is finished
        losses.append([float(logs[k]) for k in ("seg_loss", "adv_loss", "d_loss")])

    rows = timed_iterations(fada_step, args.iters)
    timed = rows[args.warmup :]
    quiet = [r["wall"] for r in timed if r["foreign_cpu"] < 0.05 * r["wall"]]
    phases = profile_phases(model, batch, args) if args.phases else None
    if phases:
        full = statistics.median(quiet or [r["wall"] for r in timed])
        phases["target_pass_rest"] = round(
            full - phases["source_pass_step"] - phases["discriminator_update"], 3
        )
    print(
        json.dumps(
            {
                "impl": "keras-fada",
                "backend": keras.backend.backend(),
                "device": device_name(),
                "net": args.net,
                "precision": args.precision,
                "jit_compile": args.jit_compile,
                "batch_per_domain": args.batch,
                "size": [args.height, args.width],
                "s_per_iter_median": statistics.median(quiet or [r["wall"] for r in timed]),
                "quiet_iters": len(quiet),
                "timed_iters": len(timed),
                "iters_s": [round(r["wall"], 4) for r in rows],
                "foreign_cpu_s_per_iter": [round(r["foreign_cpu"], 3) for r in rows],
                "first_iter_s": rows[0]["wall"],
                "images_per_s": 2 * args.batch / statistics.median(quiet or [r["wall"] for r in timed]),
                "without": HIDDEN,
                "rss_after_build_mib": rss_after_build,
                "peak_rss_mib": peak_rss_mib(),
                "peak_gpu_mem_mib": peak_gpu_mib(),
                # Process peak after each iteration: the first includes tracing/compilation.
                "peak_rss_by_iter_mib": [round(r["peak_rss"]) for r in rows],
                "losses_finite": bool(np.isfinite(losses).all()),
                **({"phase_median_s": phases} if phases else {}),
                "python": platform.python_version(),
                "keras": keras.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
