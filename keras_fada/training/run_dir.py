"""What a run directory holds, and which checkpoint each stage starts from.

``<run>/config.yaml`` (the resolved config), ``<run>/metrics.json`` (every stage and the gain), and
per stage ``<run>/<stage>/`` with ``config.yaml``, ``backup/ckpt-<step>/`` (the atomic backups of
:mod:`keras_fada.training.checkpoint`), ``snapshots/`` (the segmentor every checkpoint period,
the adaptation stage's discriminator beside it), ``segmentor.weights.h5`` (and ``discriminator.weights.h5``
after adaptation) and ``trained.json`` (the result, written once training is complete),
``logs/`` (TensorBoard), ``history.csv`` and ``metrics.json`` (written last); ``distill/pseudo_labels/``
holds the teacher's labels. Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import re

from keras_fada.training import RunError

CHECKPOINT = "segmentor.weights.h5"
DISCRIMINATOR = "discriminator.weights.h5"
TRAINED = "trained.json"


def stage_dir(run_dir: str, stage: str) -> str:
    return os.path.join(run_dir, stage)


def stage_checkpoint(run_dir: str, stage: str) -> str:
    return os.path.join(run_dir, stage, CHECKPOINT)


def discriminator_beside(segmentor_path: str) -> str:
    """The discriminator saved with a segmentor checkpoint: ``snapshots/segmentor_iter<N>.weights.h5``
    -> ``snapshots/discriminator_iter<N>.weights.h5``, ``<stage>/segmentor.weights.h5`` ->
    ``<stage>/discriminator.weights.h5`` (adaptation only; it may not exist)."""
    folder, name = os.path.split(segmentor_path)
    if not name.startswith("segmentor"):
        raise ValueError(f"{segmentor_path!r} is not a segmentor checkpoint of a run")
    return os.path.join(folder, "discriminator" + name[len("segmentor") :])


def stage_state(run_dir: str, stage: str) -> dict | None:
    """The stage's ``metrics.json`` (``finished``, ``steps``, ``miou``...) or None."""
    path = os.path.join(stage_dir(run_dir, stage), "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def trained_path(run_dir: str, stage: str) -> str:
    return os.path.join(run_dir, stage, TRAINED)


def trained_state(run_dir: str, stage: str) -> dict | None:
    """``{"steps", "train_s"}`` once the stage's trained segmentor is written, else None."""
    path = trained_path(run_dir, stage)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def has_progress(run_dir: str, stage: str) -> bool:
    """Whether the stage folder holds anything trained (a backup, the result or its report); a
    folder left by an attempt that failed before its first step does not block a rerun."""
    sdir = stage_dir(run_dir, stage)
    backup = os.path.join(sdir, "backup")
    return any(os.path.isfile(os.path.join(sdir, f)) for f in (TRAINED, "metrics.json", CHECKPOINT)) or (
        os.path.isdir(backup) and any(n.startswith("ckpt-") for n in os.listdir(backup))
    )


def check_output(run_dir: str) -> None:
    """The run directory must be a folder that can be written (checked in it, or in the nearest
    folder above it that exists: nothing is created), before any work."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"--output {run_dir!r} is a file; expected a directory (new or of a run)")
    where = os.path.abspath(run_dir)
    while not os.path.exists(where):
        where = os.path.dirname(where)
    if not os.path.isdir(where):
        raise RunError(f"--output {run_dir!r} cannot be written: {where!r} is a file, not a directory")
    try:
        probe = os.path.join(where, f".keras-fada-write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("x")
        os.remove(probe)
    except OSError as e:
        raise RunError(f"--output {run_dir!r} cannot be written: {e.strerror or e}") from None


def check_run_dir(run_dir: str, stages, resume: bool) -> None:
    """Refuses to overwrite a run without ``--resume``."""
    if resume:
        return
    taken = [s for s in stages if os.path.isdir(stage_dir(run_dir, s)) and has_progress(run_dir, s)]
    if taken:
        states = []
        for s in taken:
            st = stage_state(run_dir, s)
            states.append(f"{s} {'finished' if st and st.get('finished') else 'started'}")
        raise RunError(
            f"run directory {run_dir!r} already holds a run ({', '.join(states)}); "
            "pass --resume to continue it or choose another --output"
        )


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


SNAPSHOT = re.compile(r"segmentor_iter(\d+)\.weights\.h5")
# Selection scores that read target-val labels: a checkpoint they choose is an oracle's choice.
ORACLE_SCORES = ("oracle", "miou")


def checkpoint_choice(path: str, selection: dict | None = None) -> str:
    """How the checkpoint ``path`` was chosen, said beside every mIoU printed or recorded: by
    ``selection`` (a ``selection.json``) its score, ``label-free`` or an ``oracle`` on target val;
    else ``last step N`` (a stage's final weights, or its ``.keras`` beside them), ``snapshot step N``
    or ``as given``."""
    folder, name = os.path.split(os.path.abspath(path))
    if selection is not None:
        step, score = selection["chosen"]["step"], selection["score"]
        if score == "last":
            return f"last step {step}"
        if score in ORACLE_SCORES:
            return f"oracle: step {step} chosen on target val"
        return f"selected by {score} (label-free): step {step}"
    m = SNAPSHOT.fullmatch(name)
    if m and os.path.basename(folder) == "snapshots":
        return f"snapshot step {int(m.group(1))}"
    trained = os.path.join(folder, TRAINED)
    if name in (CHECKPOINT, CHECKPOINT.replace(".weights.h5", ".keras")) and os.path.isfile(trained):
        with open(trained) as f:
            return f"last step {json.load(f)['steps']}"
    return "as given"


def snapshots(run_dir: str, stage: str) -> list[tuple[int, str]]:
    """``(step, path)`` of the stage's snapshots (``snapshots/segmentor_iter<N>.weights.h5``) in step
    order, then the final weights (``trained.json``'s step) as the last row, which replaces a snapshot
    of the same step."""
    folder = os.path.join(stage_dir(run_dir, stage), "snapshots")
    rows = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = SNAPSHOT.fullmatch(name)
            if m:
                rows[int(m.group(1))] = os.path.join(folder, name)
    trained = trained_state(run_dir, stage)
    if trained and os.path.isfile(stage_checkpoint(run_dir, stage)):
        rows.pop(int(trained["steps"]), None)
        return [*sorted(rows.items()), (int(trained["steps"]), stage_checkpoint(run_dir, stage))]
    return sorted(rows.items())


# The ImageNet weights each backbone's official recipe starts from (the files users have).
IMAGENET_WEIGHTS = {
    "resnet101": "torchvision's resnet101-5d3b4d8f.pth",
    "vgg16": "the Caffe-converted vgg16-00b39a1b.pth",
}
SCRATCH = "scratch"  # pretrained=scratch: an explicit choice of random initialisation


def check_pretrained(cfg: dict, stages, run_dir: str | None = None) -> str | None:
    """Refuses to start, before any work, a stage whose network starts from ImageNet weights (source,
    and the self-distillation student unless ``distill.init`` is set) without them; stages already
    finished in ``run_dir`` need none. Returns a line to print once when the user chose
    ``pretrained=scratch``, else None."""
    weights = IMAGENET_WEIGHTS.get(cfg["backbone"])
    if run_dir is not None:
        stages = [s for s in stages if not (stage_state(run_dir, s) or {}).get("finished")]
    starts = [s for s in stages if s == "source" or (s == "distill" and not cfg["distill"].get("init"))]
    if weights is None or not starts:
        return None
    path = cfg.get("pretrained")
    if path == SCRATCH:
        return f"training {cfg['backbone']} from random weights in stage(s) {', '.join(starts)} (pretrained=scratch)"
    if not path:
        raise RunError(
            f"stage {starts[0]} starts {cfg['backbone']} from ImageNet weights, as the paper does: get "
            f"{weights} and pass --pretrained PATH (or pretrained=PATH); pretrained=scratch trains from "
            "random weights"
        )
    if not os.path.isfile(path):
        raise RunError(f"pretrained weights {path!r} do not exist (expected {weights})")
    return None
