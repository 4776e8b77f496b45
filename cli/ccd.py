"""``keras-fada ccd``: Class Center Distance (paper Eq. 9, Fig. 4) of one model or several side by side."""

from __future__ import annotations

import json
import math
import os

import click

from keras_fada.cli.common import (
    BACKBONE,
    UserError,
    checkpoint_config,
    choose_checkpoint,
    sibling_path,
    task_option,
    user_errors,
)
from keras_fada.config import STAGES


def _default_label(path) -> str:
    """A stage's weights (``runs/x/adapt/segmentor.weights.h5``): its stage; else the file's stem."""
    stem = os.path.basename(sibling_path(path, ""))
    return os.path.basename(os.path.dirname(os.path.abspath(path))) if stem == "segmentor" else stem


def _labelled(text):
    """``LABEL=PATH`` or ``PATH`` -> ``(label, path)``; a path holding ``=`` stays whole."""
    label, sep, path = text.partition("=")
    if sep and label and not any(c in label for c in "/\\") and not os.path.exists(text):
        return label, path
    return _default_label(text), text


def _models(checkpoints, run_dir) -> list:
    """``(label, path, choice)`` of every finished stage of ``run_dir``, then of each ``--checkpoint``."""
    from keras_fada.training import run_dir as R

    given = []
    if run_dir is not None:
        finished = [
            s for s in STAGES
            if (R.stage_state(run_dir, s) or {}).get("finished") and os.path.isfile(R.stage_checkpoint(run_dir, s))
        ]  # fmt: skip
        if not finished:
            raise UserError(f"--run {run_dir!r} holds no finished stage (a keras-fada train --output)")
        given += [(s, R.stage_checkpoint(run_dir, s)) for s in finished]
    given += [_labelled(c) for c in checkpoints]
    if not given:
        raise UserError("give --checkpoint [LABEL=]PATH (several to compare) or --run DIR")
    models, paths = [], {}
    for label, path in dict.fromkeys(given):  # the same label and path twice: one model
        if paths.setdefault(label, path) != path:
            raise UserError(f"two checkpoints are labelled {label!r}: name them --checkpoint LABEL=PATH")
        models.append((label, *choose_checkpoint(path, run_dir)))
    return models


def _mean(per_class):
    finite = [v for v in per_class.values() if v is not None]
    return float(sum(finite) / len(finite)) if finite else None


def _fmt(v, width):
    return f"{'-' if v is None else f'{v:.4f}':>{width}}"


@click.command()
@task_option
@click.option(
    "--checkpoint", "checkpoints", multiple=True, metavar="[LABEL=]PATH",
    help="A checkpoint (or selected, with --run); several to compare. Label default: its stage or file name.",
)  # fmt: skip
@click.option(
    "--run", "run_dir", default=None, help="Every finished stage of this run (and its --checkpoint selected)."
)
@click.option("--backbone", type=BACKBONE, default=None)
@click.option(
    "--num-images", type=int, default=2000, show_default=True, help="Images per domain (paper: 2,000)."
)
@click.option("--data-root", default=None)
@click.option("--config", "config_file", type=click.Path(), default=None)
@click.option(
    "--output",
    default=None,
    help="Prefix of the JSON and PNG files (default: <run>/ccd, else <checkpoint>.ccd).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1)
@user_errors
def ccd(task, checkpoints, run_dir, backbone, num_images, data_root, config_file, output, quiet, overrides):
    """Class Center Distance (paper Eq. 9, Fig. 4) on labelled source and target images: the same seeded
    source subset and target images for every model, one table, JSON and grouped bar chart."""
    models = _models(checkpoints, run_dir)
    from keras_fada import data as kd
    from keras_fada import evaluation
    from keras_fada.training import tasks
    from keras_fada.training.build import load_segmentor

    cfgs = [
        checkpoint_config(task, path, backbone, data_root, config_file, overrides) for _, path, _ in models
    ]
    k = int(cfgs[0]["num_classes"])  # the data and classes of the first model's config
    if any(int(c["num_classes"]) != k for c in cfgs):
        raise UserError(
            f"the checkpoints predict different numbers of classes: {[c['num_classes'] for c in cfgs]}"
        )
    specs = tasks.task_specs(cfgs[0])
    total = sum(min(num_images, len(specs[s])) for s in ("source_train", "target_val"))
    names = tasks.get_task(task).class_names(k)
    results = {}
    for (label, path, choice), cfg in zip(models, cfgs, strict=True):
        click.echo(f"[ccd] {label}: {path} ({choice})")
        segmentor = load_segmentor(path, cfg["backbone"], k)
        # Fresh datasets per model: the same seeded source subset and target images for each.
        src = kd.make_supervised_dataset(specs["source_train"], 1, shuffle=True, repeat=False, seed=0)
        tgt = kd.make_eval_dataset(specs["target_val"], 1, size=tuple(cfgs[0]["data"]["target_size"]))
        progress = evaluation.Progress(total, verbose=not quiet)
        data = [src.take(num_images), tgt.take(num_images)]
        values = evaluation.class_center_distance(segmentor, data, k, progress=progress)
        per_class = {
            n: (None if math.isnan(v) else round(float(v), 4)) for n, v in zip(names, values, strict=True)
        }
        results[label] = {
            "checkpoint": path,
            "checkpoint_choice": choice,
            "ccd": per_class,
            "mean": _mean(per_class),
        }
    width = max(10, *(len(label) + 2 for label in results))
    click.echo(f"{'class':<15}" + "".join(f"{label:>{width}}" for label in results))
    for n in names:
        click.echo(f"{n:<15}" + "".join(_fmt(r["ccd"][n], width) for r in results.values()))
    click.echo(f"{'mean':<15}" + "".join(_fmt(r["mean"], width) for r in results.values()))
    prefix = output or (os.path.join(run_dir, "ccd") if run_dir else sibling_path(models[0][1], ".ccd"))
    with open(prefix + ".json", "w") as f:
        json.dump({"task": task, "num_images": num_images, "models": results}, f, indent=1)
    from keras_fada.cli.plots import grouped_bar_chart

    try:
        grouped_bar_chart({label: r["ccd"] for label, r in results.items()},
                          {label: r["mean"] for label, r in results.items()}, prefix + ".png",
                          title=f"Class Center Distance - {task}", ylabel="CCD")  # fmt: skip
    except ImportError as e:
        if (e.name or "").partition(".")[0] != "matplotlib":
            raise
        click.echo("note: install keras-fada[plots] to draw the chart")
        click.echo(f"wrote {prefix}.json")
        return
    click.echo(f"wrote {prefix}.json and {prefix}.png")
