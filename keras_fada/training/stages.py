"""The stage runner: source-only training, FADA adaptation, pseudo labels and self-distillation,
each a ``model.fit`` resumable from its ``BackupAndRestore`` backup (paper Sec. 3, official
``train_src.py``, ``train_adv.py``, ``test.py --saveres``, ``train_self_distill.py``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import keras

from keras_fada import config as C
from keras_fada import data as kd
from keras_fada import evaluation
from keras_fada.callbacks import LearningRateLogger, tensorboard_callback
from keras_fada.models.fada import SegmentationTrainer
from keras_fada.training import RunError, build, distribute, tasks
from keras_fada.training import run_dir as R
from keras_fada.training.checkpoint import (
    AtomicBackupAndRestore,
    SegmentorSnapshots,
    atomic_json,
    fault,
    save_model_atomic,
    save_weights_atomic,
)
from keras_fada.training.pseudo_labels import write_pseudo_labels


def run_stage(cfg, stage, run_dir, verbose=1, evaluate_after=True) -> dict:
    """Trains one stage into ``<run_dir>/<stage>`` (continuing from its backup if there is one),
    saves the segmentor and returns the stage's metrics (target mIoU...). Models are built under
    the config's ``precision`` dtype policy; the global policy is restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.get("precision", "float32"))
    try:
        with distribute.engine(cfg):  # data parallel: build, compile and fit on cfg["devices"]
            return _run_stage(cfg, stage, run_dir, verbose, evaluate_after)
    finally:
        keras.config.set_dtype_policy(previous)


def _model(cfg, stage, run_dir, specs, verbose):
    """The stage's trainable model and its segmentor (self-distillation writes the teacher's
    pseudo labels first, once)."""
    s = cfg[stage]
    if stage == "source":
        segmentor = build.initial_segmentor(cfg, bool(s["freeze_bn"]))
        return SegmentationTrainer(segmentor), segmentor
    if stage == "adapt":
        segmentor = build.initial_segmentor(cfg, bool(s["freeze_bn"]), init=R.adapt_init(cfg, run_dir))
        return build.fada_model(cfg, segmentor), segmentor
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
            atomic_json(os.path.join(R.stage_dir(run_dir, stage), "pseudo_labels.done"), {})
        segmentor = build.initial_segmentor(cfg, bool(s["freeze_bn"]), init=R.distill_init(cfg, run_dir))
        return SegmentationTrainer(segmentor), segmentor
    raise C.ConfigError(f"unknown stage {stage!r}; stages: {', '.join(C.STAGES)}")


def _data(cfg, stage, run_dir, specs, seed, start):
    """The stage's training batches from batch ``start`` on: the seed never changes, so a resumed
    stream continues the interrupted one exactly."""
    s = cfg[stage]
    batch, jitter = int(s["batch_size"]), bool(s["jitter"])
    balanced = bool(cfg["data"]["class_balanced"])
    if stage == "source":
        return kd.make_supervised_dataset(
            specs["source_train"], batch, jitter=jitter, class_balanced=balanced, seed=seed, start=start
        )
    if stage == "adapt":
        return kd.make_adaptation_dataset(
            specs["source_train"], specs["target_train"], max(1, batch // 2), jitter=jitter,
            class_balanced=balanced, seed=seed, start=start,
        )  # fmt: skip
    labels_dir = os.path.join(R.stage_dir(run_dir, stage), "pseudo_labels")
    return kd.make_self_distillation_dataset(
        specs["target_train"].with_labels(labels_dir), batch, crop_size=tuple(s["crop_size"]),
        scale_range=tuple(s["scale_range"]), flip_prob=float(s["flip_prob"]), jitter=jitter, seed=seed,
        start=start,
    )  # fmt: skip


def _data_error(e):
    """The :class:`DatasetError` a ``tf.data`` failure carries (a corrupt file met while training)."""
    match = re.search(r"DatasetError: ([^\n]*)", str(e))
    if not match:
        return None
    return kd.DatasetError(
        f"{match.group(1).strip()}; fix or remove the file, then continue with --resume "
        "(the stage restarts from its last backup)"
    )


class _TargetEvaluation(keras.callbacks.Callback):
    """Target-val mIoU of the segmentor every ``period`` steps (at the first epoch end at or after
    each multiple), into the logs as ``val_miou`` (NaN in between), so history.csv holds the curve."""

    def __init__(self, segmentor, spec, task, num_classes, size, batch_size, period):
        super().__init__()
        self.args, self.task = (segmentor, spec, num_classes), task
        self.size, self.batch_size, self.period = size, batch_size, int(period)
        self._last = None

    def on_train_begin(self, logs=None):
        self._last = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) // self.period

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        value = float("nan")
        if step // self.period > self._last:
            self._last = step // self.period
            conf = evaluation.evaluate_dataset(*self.args, size=self.size, batch_size=self.batch_size)
            value = float(tasks.reported_scores(self.task, conf)["miou"])
        if logs is not None:
            logs["val_miou"] = value


def _callbacks(cfg, stage, sdir, backup, segmentor, specs, period, discriminator=None):
    eval_period = int(cfg["eval"]["period"])
    callbacks = [
        backup,
        LearningRateLogger(),
        SegmentorSnapshots(
            segmentor, os.path.join(sdir, "snapshots"), period, int(cfg["keep_snapshots"]), discriminator
        ),
    ]
    if eval_period:
        callbacks.append(
            _TargetEvaluation(
                segmentor,
                specs["target_val"],
                cfg["task"],
                int(cfg["num_classes"]),
                cfg[stage]["eval_size"],
                int(cfg["eval"]["batch_size"]),
                eval_period,
            )  # fmt: skip
        )
    return [
        *callbacks,
        tensorboard_callback(os.path.join(sdir, "logs"), update_freq=max(1, min(period, 50))),
        keras.callbacks.CSVLogger(os.path.join(sdir, "history.csv"), append=True),
    ]


def _train(model, cfg, stage, run_dir, specs, backup, callbacks, done, steps, period, verbose):
    """Trains from step ``done`` to ``steps`` in epochs of ``period`` steps (the last one shorter
    when ``steps`` is not a multiple), each epoch ending with a backup."""
    seed = int(cfg["seed"])
    full, rem = divmod(steps - done, period)
    e0 = done // period
    segments = [(done, e0 + full, e0, period)] if full else []
    if rem:
        segments.append((steps - rem, e0 + full + 1, e0 + full, rem))
    for start, epochs, initial, per_epoch in segments:
        train = distribute.prepare(cfg, model, _data(cfg, stage, run_dir, specs, seed, start))
        try:
            # shuffle=False: the tf.data pipeline shuffles itself (Keras warns on shuffle=True).
            model.fit(
                train, epochs=epochs, initial_epoch=initial, steps_per_epoch=per_epoch,
                callbacks=callbacks, verbose=verbose, shuffle=False,
            )  # fmt: skip
        except (C.ConfigError, kd.DatasetError, RunError):
            raise
        except Exception as e:  # noqa: BLE001 - tf.data wraps a corrupt file's DatasetError in its own
            error = _data_error(e)
            if error is None:
                raise
            raise error from None


def _run_stage(cfg, stage, run_dir, verbose, evaluate_after) -> dict:
    s = cfg[stage]
    sdir = R.stage_dir(run_dir, stage)
    R.check_stage_inputs(cfg, stage, run_dir)
    specs = tasks.task_specs(cfg)  # data mistakes surface before the stage folder exists
    os.makedirs(sdir, exist_ok=True)
    C.dump(cfg, os.path.join(sdir, "config.yaml"))
    steps = int(s["steps"])
    period = max(1, min(int(s["checkpoint_period"]), steps))
    # Weight initialisation (NumPy, Python and backend generators) follows the config's seed too,
    # so the same config gives the same run; a resume restores the RNG states of its backup.
    keras.utils.set_random_seed(int(cfg["seed"]))
    t0 = time.perf_counter()
    trained = R.trained_state(run_dir, stage)
    if trained and trained["steps"] >= steps:
        # Trained already (killed before its report): never re-initialised, only completed.
        print(f"[{stage}] trained already ({trained['steps']} steps): completing its evaluation and report")
        segmentor = build.load_segmentor(
            R.stage_checkpoint(run_dir, stage), cfg["backbone"], cfg["num_classes"]
        )
        steps_done, train_s = trained["steps"], trained["train_s"]
    else:
        model, segmentor = _model(cfg, stage, run_dir, specs, verbose)
        model.compile(**build.stage_optimizers(cfg, stage))
        backup = AtomicBackupAndRestore(os.path.join(sdir, "backup"), keep=2)
        done = backup.restore(model)
        if trained and not done:
            raise RunError(
                f"stage {stage} in {run_dir!r} finished at {trained['steps']} steps and its backup is gone, "
                f"so it cannot continue to {steps}: use another --output"
            )
        if done > steps:
            raise RunError(
                f"stage {stage} in {run_dir!r} has trained {done} steps, more than {stage}.steps={steps}"
            )
        print(
            f"[{stage}] {cfg['task']} / {cfg['backbone']}: {steps} steps"
            + (f", resuming at step {done}" if done else "")
        )
        if done < steps:
            discriminator = getattr(model, "discriminator", None)  # adaptation: snapshots keep D too
            callbacks = _callbacks(cfg, stage, sdir, backup, segmentor, specs, period, discriminator)
            _train(model, cfg, stage, run_dir, specs, backup, callbacks, done, steps, period, verbose)
        steps_done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        train_s = round(time.perf_counter() - t0, 1)
        if getattr(model, "discriminator", None) is not None:  # for select --score discriminator
            save_weights_atomic(
                model.discriminator, R.discriminator_beside(R.stage_checkpoint(run_dir, stage))
            )
        save_weights_atomic(segmentor, R.stage_checkpoint(run_dir, stage))
        # The whole model beside its weights: evaluate, predict, ccd and export load it as saved.
        save_model_atomic(segmentor, build.whole_model_path(R.stage_checkpoint(run_dir, stage)))
        atomic_json(R.trained_path(run_dir, stage), {"steps": steps_done, "train_s": train_s})
    fault("report")
    result = {"stage": stage, "finished": True, "steps": steps_done, "train_s": train_s}
    if evaluate_after and cfg["eval"]["end_of_stage"]:
        k = int(cfg["num_classes"])
        conf = evaluation.evaluate_dataset(
            segmentor, specs["target_val"], k, size=s["eval_size"], batch_size=int(cfg["eval"]["batch_size"]),
            verbose=bool(verbose),
        )  # fmt: skip
        result.update(tasks.reported_scores(cfg["task"], conf))
        result["checkpoint_choice"] = R.checkpoint_choice(R.stage_checkpoint(run_dir, stage))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_json(os.path.join(sdir, "metrics.json"), result)
    return result


def run_stages(cfg, stages, run_dir, resume=False, verbose=1, report=print) -> dict:
    """Runs ``stages`` in order into ``run_dir``; a finished stage (with at least the requested
    steps) is reused when resuming, and a stage that trains invalidates the finished ones after it."""
    R.check_output(run_dir)
    R.check_run_dir(run_dir, stages, resume)
    note = R.check_pretrained(cfg, stages, run_dir)
    if note:
        report(note)
    os.makedirs(run_dir, exist_ok=True)
    C.dump(cfg, os.path.join(run_dir, "config.yaml"))
    results = {}
    retrained = False
    for stage in stages:
        sdir = R.stage_dir(run_dir, stage)
        if os.path.isdir(sdir) and (retrained or not R.has_progress(run_dir, stage)):
            shutil.rmtree(sdir)  # built on an older upstream checkpoint, or a failed start: nothing trained
        state = R.stage_state(run_dir, stage)
        if state and state.get("finished") and state.get("steps", 0) >= int(cfg[stage]["steps"]):
            results[stage] = state
            report(f"[{stage}] already finished ({state['steps']} steps), reused")
        else:
            trained = R.trained_state(run_dir, stage)
            results[stage] = run_stage(cfg, stage, run_dir, verbose=verbose)
            retrained = retrained or not (trained and trained["steps"] == results[stage]["steps"])
        if "miou" in results[stage]:  # a stage reused from an older version's run: its final weights
            choice = results[stage].setdefault(
                "checkpoint_choice", R.checkpoint_choice(R.stage_checkpoint(run_dir, stage))
            )
            report(f"[{stage}] target mIoU {results[stage]['miou']:.2f} (checkpoint: {choice})")
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
    atomic_json(path, summary)
    return summary
