"""What a run directory holds, and which checkpoint each stage starts from.

``<run>/config.yaml`` (the resolved config), ``<run>/metrics.json`` (every stage and the gain), and
per stage ``<run>/<stage>/`` with ``config.yaml``, ``segmentor.weights.h5`` (the result), ``backup/``
(``keras.callbacks.BackupAndRestore``), ``logs/`` (TensorBoard), ``history.csv`` and
``metrics.json``; ``distill/pseudo_labels/`` holds the teacher's labels.
"""

from __future__ import annotations

import json
import os

from keras_fada.training import RunError

CHECKPOINT = "segmentor.weights.h5"


def stage_dir(run_dir: str, stage: str) -> str:
    return os.path.join(run_dir, stage)


def stage_checkpoint(run_dir: str, stage: str) -> str:
    return os.path.join(run_dir, stage, CHECKPOINT)


def stage_state(run_dir: str, stage: str) -> dict | None:
    """The stage's ``metrics.json`` (``finished``, ``steps``, ``miou``...) or None."""
    path = os.path.join(stage_dir(run_dir, stage), "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_run_dir(run_dir: str, stages, resume: bool) -> None:
    """Refuses to overwrite a run without ``--resume``."""
    if resume:
        return
    taken = [s for s in stages if os.path.isdir(stage_dir(run_dir, s))]
    if taken:
        states = []
        for s in taken:
            st = stage_state(run_dir, s)
            states.append(f"{s} {'finished' if st and st.get('finished') else 'started'}")
        raise RunError(
            f"run directory {run_dir!r} already holds a run ({', '.join(states)}); "
            "pass --resume to continue it or choose another --output"
        )


def backup_epoch(run_dir: str, stage: str) -> int:
    """The epoch a stage's ``BackupAndRestore`` backup resumes at (0 without one)."""
    path = os.path.join(stage_dir(run_dir, stage), "backup", "training_metadata.json")
    if os.path.isfile(path):
        with open(path) as f:
            return int(json.load(f).get("epoch", 0))
    return 0


def pseudo_labels_done(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(stage_dir(run_dir, "distill"), "pseudo_labels.done"))


# ------------------------------------------------------------------------------------ stage inputs
def adapt_init(cfg: dict, run_dir: str) -> str:
    """The adaptation stage's start: ``adapt.init``, else this run's source-only checkpoint."""
    return cfg["adapt"].get("init") or stage_checkpoint(run_dir, "source")


def distill_teacher(cfg: dict, run_dir: str) -> str:
    """The self-distillation teacher: ``distill.teacher``, else this run's adapted checkpoint."""
    return cfg["distill"].get("teacher") or stage_checkpoint(run_dir, "adapt")


def distill_init(cfg: dict, run_dir: str) -> str | None:
    """The student's start: ``distill.init`` (a path), ``"teacher"`` (the teacher's checkpoint:
    fine-tune instead of training from scratch) or None (fresh, as official)."""
    init = cfg["distill"].get("init")
    return distill_teacher(cfg, run_dir) if init == "teacher" else init


def check_stage_inputs(cfg: dict, stage: str, run_dir: str) -> None:
    """The checkpoint a stage starts from must exist before anything is written."""
    if stage == "adapt" and not os.path.isfile(adapt_init(cfg, run_dir)):
        raise RunError(
            f"stage adapt starts from the source-only checkpoint {adapt_init(cfg, run_dir)!r}, which does "
            "not exist: run --stage source into the same --output first, or set adapt.init=PATH"
        )
    if stage == "distill" and not pseudo_labels_done(run_dir):
        teacher = distill_teacher(cfg, run_dir)
        if not os.path.isfile(teacher):
            raise RunError(
                f"stage distill needs the adapted checkpoint {teacher!r} as teacher, which does not "
                "exist: run --stage adapt into the same --output first, or set distill.teacher=PATH"
            )
