"""``keras-fada ccd``: Class Center Distance (paper Eq. 9, Fig. 4)."""

from __future__ import annotations

import json

import click

from keras_fada.cli.common import BACKBONE, checkpoint_config, sibling_path, task_option, user_errors


@click.command()
@task_option
@click.option("--checkpoint", required=True)
@click.option("--backbone", type=BACKBONE, default=None)
@click.option(
    "--num-images", type=int, default=2000, show_default=True, help="Images per domain (paper: 2,000)."
)
@click.option("--data-root", default=None)
@click.option("--config", "config_file", type=click.Path(), default=None)
@click.option("--output", default=None, help="Prefix of the JSON and PNG files (default: <checkpoint>.ccd).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1)
@user_errors
def ccd(task, checkpoint, backbone, num_images, data_root, config_file, output, quiet, overrides):
    """Class Center Distance (paper Eq. 9, Fig. 4) on labelled source and target images."""
    from keras_fada import data as kd
    from keras_fada import evaluation
    from keras_fada.training import tasks
    from keras_fada.training.build import load_segmentor

    cfg = checkpoint_config(task, checkpoint, backbone, data_root, config_file, overrides)
    k = int(cfg["num_classes"])
    segmentor = load_segmentor(checkpoint, cfg["backbone"], k)
    specs = tasks.task_specs(cfg)
    src = kd.make_supervised_dataset(specs["source_train"], 1, shuffle=True, repeat=False, seed=0)
    tgt = kd.make_eval_dataset(specs["target_val"], 1, size=tuple(cfg["data"]["target_size"]))
    total = sum(min(num_images, len(specs[s])) for s in ("source_train", "target_val"))
    progress = evaluation.Progress(total, verbose=not quiet)
    data = [src.take(num_images), tgt.take(num_images)]
    values = evaluation.class_center_distance(segmentor, data, k, progress=progress)
    names = tasks.get_task(task).class_names(k)
    per_class = {n: (None if v != v else round(float(v), 4)) for n, v in zip(names, values, strict=True)}
    finite = [v for v in per_class.values() if v is not None]
    mean = float(sum(finite) / len(finite)) if finite else float("nan")
    for n, v in per_class.items():
        click.echo(f"{n:<15}{'-' if v is None else f'{v:.4f}':>10}")
    click.echo(f"{'mean':<15}{mean:>10.4f}")
    prefix = output or sibling_path(checkpoint, ".ccd")
    with open(prefix + ".json", "w") as f:
        json.dump({"task": task, "checkpoint": checkpoint, "ccd": per_class, "mean": mean}, f, indent=1)
    from keras_fada.cli.plots import bar_chart

    bar_chart(per_class, mean, prefix + ".png", title=f"Class Center Distance - {task} (mean {mean:.3f})")
    click.echo(f"wrote {prefix}.json and {prefix}.png")
