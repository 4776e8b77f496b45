"""The FADA pipeline behind ``keras-fada``: tasks, networks, stages, pseudo labels and evaluation.

A run directory holds ``config.yaml`` (the resolved configuration), ``metrics.json`` and one folder per
stage (``source/``, ``adapt/``, ``distill/``) with that stage's ``config.yaml``, ``segmentor.weights.h5``
(the stage's result), ``backup/`` (``keras.callbacks.BackupAndRestore``: resumable at every
``checkpoint_period`` steps), ``logs/`` (TensorBoard) and ``metrics.json``.

Example:
>>> cfg = config.load_config("synthetic")
>>> results = run_stages(cfg, ["source", "adapt"], "runs/synthetic")
>>> results["adapt"]["miou"] - results["source"]["miou"]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings

import keras
import numpy as np
from PIL import Image

from keras_fada import config as C
from keras_fada import data as kd
from keras_fada import evaluation, metrics
from keras_fada import optimizers as fopt
from keras_fada.callbacks import LearningRateLogger
from keras_fada.data import labels as L
from keras_fada.layers import DomainEncoder, FineGrainedDiscriminator
from keras_fada.models.deeplabv2 import (
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    deeplabv2_vgg16,
    load_torch_weights,
)
from keras_fada.models.fada import FADA, SegmentationTrainer

CROSSCITY = {"cs2rome": "Rome", "cs2rio": "Rio", "cs2tokyo": "Tokyo", "cs2taipei": "Taipei"}
CHECKPOINT = "segmentor.weights.h5"


class PipelineError(ValueError):
    """A user mistake found while running the pipeline (missing checkpoint, finished run, ...)."""


# ------------------------------------------------------------------------------------ tasks
def task_specs(cfg: dict) -> dict:
    """``source_train``, ``target_train`` (images only are used) and ``target_val`` specs of the task."""
    task, root, k = cfg["task"], cfg["data"]["root"], int(cfg["num_classes"])
    src_size, tgt_size = tuple(cfg["data"]["source_size"]), tuple(cfg["data"]["target_size"])
    if task == "synthetic":
        specs = kd.synthetic_specs(os.path.join(root, "synthetic"), **cfg["data"]["synthetic"])
        return {
            "source_train": specs["source_train"],
            "target_train": specs["target_train"],
            "target_val": specs["target_val"],
        }
    if task == "gta2cs":
        source = kd.gta5(os.path.join(root, "gta5"), train_size=src_size)
    elif task == "synthia2cs":
        source = kd.synthia(os.path.join(root, "synthia"), train_size=src_size)
    else:
        source = kd.cityscapes(os.path.join(root, "cityscapes"), "train", k, train_size=src_size)
    if task in CROSSCITY:
        city, ccroot = CROSSCITY[task], os.path.join(root, "NTHU_Datasets")
        target_train = kd.crosscity(ccroot, city, "train", k, train_size=tgt_size)
        target_val = kd.crosscity(ccroot, city, "test", k)
    else:
        cs = os.path.join(root, "cityscapes")
        target_train = kd.cityscapes(cs, "train", k, labelled=False, train_size=tgt_size)
        target_val = kd.cityscapes(cs, "val", k)
    return {"source_train": source, "target_train": target_train, "target_val": target_val}


def class_names(task: str, num_classes: int) -> tuple:
    return L.CITYSCAPES_19_CLASSES if num_classes == 19 else L.SYNTHIA_16_CLASSES[:num_classes]


def reported_scores(task: str, confusion: np.ndarray) -> dict:
    """Per-class IoU (%) and the task's means: mIoU (19 / 16 / 13 Cross-City classes), plus mIoU*
    (13 classes) for SYNTHIA."""
    k = confusion.shape[0]
    iou = metrics.iou_per_class(confusion) * 100
    names = class_names(task, k)
    shown = list(range(k))
    out = {}
    if task in CROSSCITY and k == 19:
        shown = list(L.CLASSES_13_TRAIN_IDS_19)
    out["iou"] = {names[i]: round(float(iou[i]), 2) for i in shown}
    out["miou"] = round(float(iou[shown].mean()), 2)
    if task == "synthia2cs" and k == 16:
        out["miou13"] = round(float(iou[list(L.CLASSES_13_IDS_16)].mean()), 2)
    out["num_classes_reported"] = len(shown)
    return out


# ------------------------------------------------------------------------------------ networks
def build_segmentor(backbone: str, num_classes: int, freeze_bn: bool = True):
    if backbone == "resnet101":
        return deeplabv2_resnet101(num_classes, frozen_bn=freeze_bn)
    if backbone == "vgg16":
        return deeplabv2_vgg16(num_classes)
    if backbone == "small":
        return deeplabv2_resnet_small(num_classes, frozen_bn=freeze_bn)
    raise C.ConfigError(f"unknown backbone {backbone!r}; backbones: {', '.join(C.BACKBONES)}")


def load_weights(segmentor, path: str, backbone: str, num_classes: int) -> None:
    """Keras ``.weights.h5`` or an official PyTorch checkpoint; a mismatch is a :class:`PipelineError`."""
    if not os.path.isfile(path):
        raise PipelineError(f"checkpoint {path!r} does not exist")
    try:
        if path.endswith(".weights.h5"):
            segmentor.load_weights(path)
        else:
            load_torch_weights(segmentor, path)
    except Exception as e:  # noqa: BLE001 - Keras/h5py raise many types for a mismatched file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(
            f"checkpoint {path!r} does not fit a {backbone} network with {num_classes} classes "
            f"(another backbone or class count?): {first[:300]}"
        ) from None


def load_segmentor(path: str, backbone: str, num_classes: int, freeze_bn=None):
    """A segmentor with the weights of ``path``; for ResNets the BN kind (frozen or trainable) is
    taken from the checkpoint unless ``freeze_bn`` is given."""
    variants = [freeze_bn] if freeze_bn is not None or backbone == "vgg16" else [True, False]
    error = None
    for frozen in variants:
        segmentor = build_segmentor(backbone, num_classes, True if frozen is None else frozen)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_weights(segmentor, path, backbone, num_classes)
            return segmentor
        except PipelineError as e:
            error = e
    raise error


def freeze_batch_norm(segmentor) -> None:
    """Fixes the statistics and affine parameters of every trainable BatchNorm (official FREEZE_BN)."""
    for layer in segmentor._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _fresh_segmentor(cfg, freeze_bn, init=None):
    if init:
        segmentor = load_segmentor(init, cfg["backbone"], cfg["num_classes"])
        if freeze_bn:
            freeze_batch_norm(segmentor)
        return segmentor
    segmentor = build_segmentor(cfg["backbone"], cfg["num_classes"], freeze_bn)
    if cfg.get("pretrained"):
        if not os.path.isfile(cfg["pretrained"]):
            raise PipelineError(f"pretrained weights {cfg['pretrained']!r} do not exist")
        load_torch_weights(segmentor, cfg["pretrained"], kind="imagenet")
    return segmentor


def fada_model(cfg, segmentor):
    """The adaptation stage's FADA model (encoder, discriminator, loss switches) from ``cfg``."""
    enc = cfg["encoder"]
    encoder = DomainEncoder(
        enc["mode"], temperature=float(enc["temperature"]), clip=float(enc["clip"]),
        threshold=float(enc["threshold"]),
    )  # fmt: skip
    width = int(cfg["discriminator"]["width"])
    disc = FineGrainedDiscriminator(
        encoder.knowledge_channels(segmentor.num_classes), filters=(width, width // 2)
    )
    return FADA(
        segmentor,
        discriminator=disc,
        encoder=encoder,
        lambda_adv=float(cfg["lambda_adv"]),
        source_temperature=float(cfg["source_temperature"]),
        discriminator_resolution=cfg["discriminator"]["resolution"],
        discriminator_weights=tuple(cfg["discriminator"]["weights"]),
    )


def _optimizers(cfg, stage):
    s, o = cfg[stage], cfg["optim"]
    return fopt.official_optimizers(
        base_lr=float(s["base_lr"]),
        base_lr_d=float(s.get("base_lr_d", 1e-4)),
        max_iter=int(s["max_iter"]),
        power=float(o["power"]),
        momentum=float(o["momentum"]),
        weight_decay=float(o["weight_decay"]),
        classifier_lr_multiplier=float(o["classifier_lr_multiplier"]),
        adam_betas=tuple(o["adam_betas"]),
    )


# ------------------------------------------------------------------------------------ evaluation
def evaluate(segmentor, spec, num_classes, size=None, batch_size=1, scales=(1.0,), flip=False):
    """Confusion matrix of ``segmentor`` on a labelled spec (images resized to ``size``)."""
    ds = kd.make_eval_dataset(spec, batch_size, size=tuple(size) if size else "eval")
    return evaluation.confusion_over(segmentor, ds, num_classes, scales=tuple(scales), flip=flip)


def write_pseudo_labels(segmentor, spec, out_dir, size=None, batch_size=1, verbose=True) -> int:
    """Hard (argmax) pseudo labels of ``spec``'s images as palette PNGs ``<out_dir>/<stem>.png`` at
    each image's original size (official ``test.py --saveres``); returns their number."""
    os.makedirs(out_dir, exist_ok=True)
    ds = kd.make_inference_dataset(spec, batch_size, size=tuple(size) if size else "eval")
    palette = L.palette_flat(L.CITYSCAPES_PALETTE)
    n = 0
    for images, paths in ds.as_numpy_iterator():
        paths = [p.decode() for p in paths]
        h, w = kd.datasets.png_size(paths[0]) or images.shape[1:3]
        probs = evaluation.predict_probabilities(segmentor, images, (h, w))
        for p, pred in zip(paths, probs.argmax(-1).astype(np.uint8), strict=True):
            img = Image.fromarray(pred, mode="P")
            img.putpalette(palette)
            img.save(os.path.join(out_dir, os.path.basename(p)[: -len(spec.image_suffix)] + ".png"))
            n += 1
    if verbose:
        print(f"wrote {n} pseudo labels to {out_dir}")
    return n


# ------------------------------------------------------------------------------------ logging
class ScalarTensorBoard(keras.callbacks.Callback):
    """TensorBoard scalars (``train/<metric>`` every ``update_freq`` steps, ``epoch_<metric>``) written
    with TensorFlow's summary ops only: the stand-in for ``keras.callbacks.TensorBoard`` where the
    ``tensorboard`` package (which that callback needs to encode scalars) is not installed."""

    def __init__(self, log_dir, update_freq=50):
        super().__init__()
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        self.update_freq = int(update_freq)
        self._step = 0

    def _write(self, prefix, logs, step):
        with self._writer.as_default():
            for k, v in (logs or {}).items():
                if np.isscalar(v) or np.ndim(v) == 0:
                    value = self._tf.constant(float(v), self._tf.float32)
                    self._tf.summary.write(f"{prefix}{k}", value, step=step, metadata=self._meta)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.update_freq == 0:
            self._write("batch_", logs, self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._write("epoch_", logs, epoch)

    def on_train_end(self, logs=None):
        self._writer.close()


def tensorboard_callback(log_dir, update_freq=50):
    """``keras.callbacks.TensorBoard`` when the ``tensorboard`` package is installed, else
    :class:`ScalarTensorBoard` (same event-file format, scalars only)."""
    try:
        import tensorboard  # noqa: F401

        return keras.callbacks.TensorBoard(log_dir, update_freq=update_freq)
    except ImportError:
        return ScalarTensorBoard(log_dir, update_freq=update_freq)


# ------------------------------------------------------------------------------------ stages
def stage_dir(run_dir, stage):
    return os.path.join(run_dir, stage)


def stage_state(run_dir, stage) -> dict | None:
    """The stage's ``metrics.json`` (``finished``, ``steps``, ``miou``...) or None."""
    path = os.path.join(stage_dir(run_dir, stage), "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_run_dir(run_dir, stages, resume):
    """Refuses to overwrite a run without ``--resume``."""
    if resume:
        return
    taken = [s for s in stages if os.path.isdir(stage_dir(run_dir, s))]
    if taken:
        states = []
        for s in taken:
            st = stage_state(run_dir, s)
            states.append(f"{s} {'finished' if st and st.get('finished') else 'started'}")
        raise PipelineError(
            f"run directory {run_dir!r} already holds a run ({', '.join(states)}); "
            "pass --resume to continue it or choose another --output"
        )


def _backup_epoch(backup):
    path = os.path.join(backup, "training_metadata.json")
    if os.path.isfile(path):
        with open(path) as f:
            return int(json.load(f).get("epoch", 0))
    return 0


def _distill_init(cfg, run_dir):
    """The student's initial weights: ``distill.init`` (a path), ``"teacher"`` (the teacher's
    checkpoint: fine-tune instead of training from scratch) or None (fresh, as official)."""
    init = cfg["distill"].get("init")
    if init == "teacher":
        return cfg["distill"].get("teacher") or os.path.join(stage_dir(run_dir, "adapt"), CHECKPOINT)
    return init


def _check_inputs(cfg, stage, run_dir):
    """The checkpoint a stage starts from must exist before anything is written."""
    if stage == "adapt":
        init = cfg["adapt"].get("init") or os.path.join(stage_dir(run_dir, "source"), CHECKPOINT)
        if not os.path.isfile(init):
            raise PipelineError(
                f"stage adapt starts from the source-only checkpoint {init!r}, which does not exist: "
                "run --stage source into the same --output first, or set adapt.init=PATH"
            )
    if stage == "distill" and not os.path.isfile(
        os.path.join(stage_dir(run_dir, stage), "pseudo_labels.done")
    ):
        teacher = cfg["distill"].get("teacher") or os.path.join(stage_dir(run_dir, "adapt"), CHECKPOINT)
        if not os.path.isfile(teacher):
            raise PipelineError(
                f"stage distill needs the adapted checkpoint {teacher!r} as teacher, which does not "
                "exist: run --stage adapt into the same --output first, or set distill.teacher=PATH"
            )


def run_stage(cfg, stage, run_dir, verbose=1, evaluate_after=True) -> dict:
    """Trains one stage into ``<run_dir>/<stage>`` (continuing from its backup if there is one),
    saves the segmentor and returns the stage's metrics (target mIoU...). Models are built under
    the config's ``precision`` dtype policy; the global policy is restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.get("precision", "float32"))
    try:
        return _run_stage(cfg, stage, run_dir, verbose, evaluate_after)
    finally:
        keras.config.set_dtype_policy(previous)


def _run_stage(cfg, stage, run_dir, verbose, evaluate_after) -> dict:
    s = cfg[stage]
    k, backbone = int(cfg["num_classes"]), cfg["backbone"]
    sdir = stage_dir(run_dir, stage)
    _check_inputs(cfg, stage, run_dir)
    os.makedirs(sdir, exist_ok=True)
    C.dump(cfg, os.path.join(sdir, "config.yaml"))
    specs = task_specs(cfg)
    steps = int(s["steps"])
    per_epoch = max(1, min(int(s["checkpoint_period"]), steps))
    epochs = math.ceil(steps / per_epoch)
    backup = os.path.join(sdir, "backup")
    start_epoch = _backup_epoch(backup)
    seed = int(cfg["seed"]) + 1009 * start_epoch  # fresh data order after a resume
    # Weight initialisation (NumPy, Python and backend generators) follows the config's seed too,
    # so the same config gives the same run.
    keras.utils.set_random_seed(seed)
    batch = int(s["batch_size"])
    t0 = time.perf_counter()

    if stage == "source":
        segmentor = _fresh_segmentor(cfg, bool(s["freeze_bn"]))
        model = SegmentationTrainer(segmentor)
        train = kd.make_supervised_dataset(
            specs["source_train"],
            batch,
            jitter=bool(s["jitter"]),
            class_balanced=bool(cfg["data"]["class_balanced"]),
            seed=seed,
        )
    elif stage == "adapt":
        init = s.get("init") or os.path.join(stage_dir(run_dir, "source"), CHECKPOINT)
        if not os.path.isfile(init):
            raise PipelineError(
                f"stage adapt starts from the source-only checkpoint {init!r}, which does not exist: "
                "run --stage source into the same --output first, or set adapt.init=PATH"
            )
        segmentor = load_segmentor(init, backbone, k)
        if s["freeze_bn"]:
            freeze_batch_norm(segmentor)
        model = fada_model(cfg, segmentor)
        train = kd.make_adaptation_dataset(
            specs["source_train"],
            specs["target_train"],
            max(1, batch // 2),
            jitter=bool(s["jitter"]),
            class_balanced=bool(cfg["data"]["class_balanced"]),
            seed=seed,
        )
    elif stage == "distill":
        labels_dir = os.path.join(sdir, "pseudo_labels")
        if not os.path.isfile(os.path.join(sdir, "pseudo_labels.done")):
            teacher_path = s.get("teacher") or os.path.join(stage_dir(run_dir, "adapt"), CHECKPOINT)
            if not os.path.isfile(teacher_path):
                raise PipelineError(
                    f"stage distill needs the adapted checkpoint {teacher_path!r} as teacher, which does not "
                    "exist: run --stage adapt into the same --output first, or set distill.teacher=PATH"
                )
            teacher = load_segmentor(teacher_path, backbone, k)
            write_pseudo_labels(
                teacher, specs["target_train"], labels_dir, size=s["teacher_size"],
                batch_size=int(cfg["eval"]["batch_size"]), verbose=bool(verbose),
            )  # fmt: skip
            open(os.path.join(sdir, "pseudo_labels.done"), "w").close()
        segmentor = _fresh_segmentor(cfg, bool(s["freeze_bn"]), init=_distill_init(cfg, run_dir))
        model = SegmentationTrainer(segmentor)
        train = kd.make_self_distillation_dataset(
            specs["target_train"].with_labels(labels_dir),
            batch,
            crop_size=tuple(s["crop_size"]),
            scale_range=tuple(s["scale_range"]),
            flip_prob=float(s["flip_prob"]),
            jitter=bool(s["jitter"]),
            seed=seed,
        )
    else:
        raise C.ConfigError(f"unknown stage {stage!r}; stages: {', '.join(C.STAGES)}")

    opts = _optimizers(cfg, stage)
    if stage != "adapt":
        opts.pop("discriminator_optimizer")
    model.compile(**opts)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup, save_freq="epoch", delete_checkpoint=False),
        LearningRateLogger(),
        tensorboard_callback(os.path.join(sdir, "logs"), update_freq=max(1, min(per_epoch, 50))),
        keras.callbacks.CSVLogger(os.path.join(sdir, "history.csv"), append=True),
    ]
    done = start_epoch * per_epoch  # the header is printed even without progress bars
    print(
        f"[{stage}] {cfg['task']} / {backbone}: {epochs * per_epoch} steps"
        + (f", resuming at step {done}" if done else "")
    )
    if start_epoch < epochs:
        # shuffle=False: the tf.data pipeline shuffles itself (Keras warns on shuffle=True with a Dataset).
        model.fit(
            train,
            epochs=epochs,
            steps_per_epoch=per_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
    steps_done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    segmentor.save_weights(os.path.join(sdir, CHECKPOINT))
    result = {
        "stage": stage,
        "finished": True,
        "steps": steps_done,
        "train_s": round(time.perf_counter() - t0, 1),
    }
    if evaluate_after:
        conf = evaluate(segmentor, specs["target_val"], k, size=s["eval_size"], batch_size=8)
        result.update(reported_scores(cfg["task"], conf))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    with open(os.path.join(sdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def run_stages(cfg, stages, run_dir, resume=False, verbose=1, report=print) -> dict:
    """Runs ``stages`` in order into ``run_dir``; a finished stage (with at least the requested
    steps) is reused when resuming, and a stage that trains invalidates the finished ones after it."""
    check_run_dir(run_dir, stages, resume)
    os.makedirs(run_dir, exist_ok=True)
    C.dump(cfg, os.path.join(run_dir, "config.yaml"))
    results = {}
    retrained = False
    for stage in stages:
        state = stage_state(run_dir, stage)
        if retrained and os.path.isdir(stage_dir(run_dir, stage)):
            shutil.rmtree(stage_dir(run_dir, stage))  # built on an older upstream checkpoint
            state = None
        if state and state.get("finished") and state.get("steps", 0) >= int(cfg[stage]["steps"]):
            results[stage] = state
            report(f"[{stage}] already finished ({state['steps']} steps), reused")
        else:
            results[stage] = run_stage(cfg, stage, run_dir, verbose=verbose)
            retrained = True
        if "miou" in results[stage]:
            report(f"[{stage}] target mIoU {results[stage]['miou']:.2f}")
    summary = {"task": cfg["task"], "backbone": cfg["backbone"], "stages": results}
    path = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        summary["stages"] = {**old.get("stages", {}), **results}
    src = summary["stages"].get("source", {}).get("miou")
    if src is not None:
        summary["gain_over_source_only"] = {
            s: round(r["miou"] - src, 2)
            for s, r in summary["stages"].items()
            if s != "source" and "miou" in r
        }
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary
