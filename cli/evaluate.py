"""``keras-fada evaluate``: per-class IoU and mIoU on the task's target validation set."""

from __future__ import annotations

import json
import os

import click

from keras_fada.cli.common import (
    BACKBONE,
    checkpoint_config,
    choose_checkpoint,
    parse_scales,
    parse_size,
    run_option,
    sibling_path,
    task_option,
    user_errors,
)
from keras_fada.config import STAGES


@click.command()
@task_option
@click.option(
    "--checkpoint", required=True, help=".weights.h5, .keras, a preset folder, an official .pth or selected."
)
@run_option
@click.option("--backbone", type=BACKBONE, default=None, help="Default: the run's, else the task's.")
@click.option("--multiscale", is_flag=True, help="Fuse the probabilities of eval.scales (0.7,1.0,1.3).")
@click.option("--flip", is_flag=True, help="Also fuse horizontally flipped passes.")
@click.option("--scales", default=None, help="Comma-separated scales, e.g. 0.7,1.0,1.3.")
@click.option("--size", default=None, help="Evaluation input size HxW (default: the stage's eval_size).")
@click.option("--data-root", default=None)
@click.option("--config", "config_file", type=click.Path(), default=None)
@click.option("--output", default=None, help="JSON file (default: <checkpoint>.eval.json).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1)
@user_errors
def evaluate(
    task, checkpoint, backbone, multiscale, flip, scales, size, data_root, config_file, output, quiet,
    overrides, run_dir=None,
):  # fmt: skip
    """Per-class IoU and mIoU on the task's target validation set (also written as JSON).
    Multi-scale inputs are resized as eval.scale_resize says (default: as the official code)."""
    from keras_fada.evaluation import evaluate_dataset
    from keras_fada.training import tasks
    from keras_fada.training.build import load_segmentor

    checkpoint, choice = choose_checkpoint(checkpoint, run_dir)
    cfg = checkpoint_config(task, checkpoint, backbone, data_root, config_file, overrides)
    k = int(cfg["num_classes"])
    scale_list = parse_scales(multiscale, scales, cfg)
    stage = os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))
    size = parse_size(size) or tuple(cfg[stage if stage in STAGES else "adapt"]["eval_size"])
    segmentor = load_segmentor(checkpoint, cfg["backbone"], k)
    spec = tasks.task_specs(cfg)["target_val"]
    scale_resize = cfg["eval"]["scale_resize"]
    conf = evaluate_dataset(segmentor, spec, k, size=size, batch_size=int(cfg["eval"]["batch_size"]),
                            scales=scale_list, flip=flip, scale_resize=scale_resize, verbose=not quiet)  # fmt: skip
    scores = tasks.reported_scores(task, conf)
    scores.update(task=task, checkpoint=checkpoint, checkpoint_choice=choice, scales=list(scale_list),
                  flip=flip, size=list(size))  # fmt: skip
    if len(scale_list) > 1 or scale_list[0] != 1.0:
        scores.update(scale_resize=scale_resize)
    for name, v in scores["iou"].items():
        click.echo(f"{name:<15}{v:>7.2f}")
    click.echo(
        f"{'mIoU':<15}{scores['miou']:>7.2f}   ({scores['num_classes_reported']} classes; checkpoint: {choice})"
    )
    if "miou13" in scores:
        click.echo(f"{'mIoU*':<15}{scores['miou13']:>7.2f}   (13 classes; checkpoint: {choice})")
    output = output or sibling_path(checkpoint, ".eval.json")
    with open(output, "w") as f:
        json.dump(scores, f, indent=1)
    click.echo(f"wrote {output}")
