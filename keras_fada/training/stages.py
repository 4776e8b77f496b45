"""The stage runner: source-only training, FADA adaptation, pseudo labels and self-distillation,
each a ``model.fit`` resumable from its ``BackupAndRestore`` backup (paper Sec. 3, official
``train_src.py``, ``train_adv.py``, ``test.py --saveres``, ``train_self_distill.py``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import keras

from keras_fada import config as C
from keras_fada import data as kd
from keras_fada import evaluation
from keras_fada.callbacks import LearningRateLogger, tensorboard_callback
from keras_fada.models.fada import SegmentationTrainer
from keras_fada.training import build, tasks
from keras_fada.training import run_dir as R
from keras_fada.training.pseudo_labels import write_pseudo_labels


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


def _model_and_data(cfg, stage, run_dir, specs, seed, verbose):
    """The stage's trainable model, its segmentor and its training batches."""
    s = cfg[stage]
    batch, jitter = int(s["batch_size"]), bool(s["jitter"])
    if stage == "source":
        segmentor = build.initial_segmentor(cfg, bool(s["freeze_bn"]))
        train = kd.make_supervised_dataset(
            specs["source_train"], batch, jitter=jitter,
            class_balanced=bool(cfg["data"]["class_balanced"]), seed=seed,
        )  # fmt: skip
        return SegmentationTrainer(segmentor), segmentor, train
    if stage == "adapt":
        segmentor = build.initial_segmentor(cfg, bool(s["freeze_bn"]), init=R.adapt_init(cfg, run_dir))
        model = build.fada_model(cfg, segmentor)
        train = kd.make_adaptation_dataset(
            specs["source_train"], specs["target_train"], max(1, batch // 2), jitter=jitter,
            class_balanced=bool(cfg["data"]["class_balanced"]), seed=seed,
        )  # fmt: skip
        return model, segmentor, train
    if stage == "distill":
        labels_dir = os.path.join(R.stage_dir(run_dir, stage), "pseudo_labels")
        if not R.pseudo_labels_done(run_dir):
            teacher = build.load_segmentor(
                R.distill_teacher(cfg, run_dir), cfg["backbone"], cfg["num_classes"]
            )
            write_pseudo_labels(
                teacher, specs["target_train"], labels_dir, size=s["teacher_size"],
                batch_size=int(cfg["eval"]["batch_size"]), verbose=bool(verbose),
            )  # fmt: skip
            open(os.path.join(R.stage_dir(run_dir, stage), "pseudo_labels.done"), "w").close()
        segmentor = build.initial_segmentor(cfg, bool(s["freeze_bn"]), init=R.distill_init(cfg, run_dir))
        train = kd.make_self_distillation_dataset(
            specs["target_train"].with_labels(labels_dir), batch, crop_size=tuple(s["crop_size"]),
            scale_range=tuple(s["scale_range"]), flip_prob=float(s["flip_prob"]), jitter=jitter, seed=seed,
        )  # fmt: skip
        return SegmentationTrainer(segmentor), segmentor, train
    raise C.ConfigError(f"unknown stage {stage!r}; stages: {', '.join(C.STAGES)}")


def _run_stage(cfg, stage, run_dir, verbose, evaluate_after) -> dict:
    s = cfg[stage]
    sdir = R.stage_dir(run_dir, stage)
    R.check_stage_inputs(cfg, stage, run_dir)
    os.makedirs(sdir, exist_ok=True)
    C.dump(cfg, os.path.join(sdir, "config.yaml"))
    specs = tasks.task_specs(cfg)
    steps = int(s["steps"])
    per_epoch = max(1, min(int(s["checkpoint_period"]), steps))
    epochs = math.ceil(steps / per_epoch)
    start_epoch = R.backup_epoch(run_dir, stage)
    seed = int(cfg["seed"]) + 1009 * start_epoch  # fresh data order after a resume
    # Weight initialisation (NumPy, Python and backend generators) follows the config's seed too,
    # so the same config gives the same run.
    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    model, segmentor, train = _model_and_data(cfg, stage, run_dir, specs, seed, verbose)
    model.compile(**build.stage_optimizers(cfg, stage))
    callbacks = [
        keras.callbacks.BackupAndRestore(
            os.path.join(sdir, "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        LearningRateLogger(),
        tensorboard_callback(os.path.join(sdir, "logs"), update_freq=max(1, min(per_epoch, 50))),
        keras.callbacks.CSVLogger(os.path.join(sdir, "history.csv"), append=True),
    ]
    done = start_epoch * per_epoch  # the header is printed even without progress bars
    print(
        f"[{stage}] {cfg['task']} / {cfg['backbone']}: {epochs * per_epoch} steps"
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
    segmentor.save_weights(os.path.join(sdir, R.CHECKPOINT))
    # The whole model beside its weights: evaluate, predict, ccd and export load it as saved.
    segmentor.save(build.whole_model_path(os.path.join(sdir, R.CHECKPOINT)))
    result = {
        "stage": stage,
        "finished": True,
        "steps": steps_done,
        "train_s": round(time.perf_counter() - t0, 1),
    }
    if evaluate_after:
        k = int(cfg["num_classes"])
        conf = evaluation.evaluate_dataset(
            segmentor, specs["target_val"], k, size=s["eval_size"], batch_size=8
        )
        result.update(tasks.reported_scores(cfg["task"], conf))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    with open(os.path.join(sdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def run_stages(cfg, stages, run_dir, resume=False, verbose=1, report=print) -> dict:
    """Runs ``stages`` in order into ``run_dir``; a finished stage (with at least the requested
    steps) is reused when resuming, and a stage that trains invalidates the finished ones after it."""
    R.check_run_dir(run_dir, stages, resume)
    finished = {s for s in stages if (R.stage_state(run_dir, s) or {}).get("finished")}
    note = build.check_pretrained(cfg, [s for s in stages if s not in finished])
    if note:
        report(note)
    os.makedirs(run_dir, exist_ok=True)
    C.dump(cfg, os.path.join(run_dir, "config.yaml"))
    results = {}
    retrained = False
    for stage in stages:
        state = R.stage_state(run_dir, stage)
        if retrained and os.path.isdir(R.stage_dir(run_dir, stage)):
            shutil.rmtree(R.stage_dir(run_dir, stage))  # built on an older upstream checkpoint
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
