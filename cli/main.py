"""``keras-fada``: train, evaluate, ccd, predict, convert.

Errors from user mistakes (unknown task, bad config key, missing data or checkpoint, mismatched
checkpoint, a finished run without ``--resume``) print one line and exit with code 2.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from keras_fada.config import STAGES, ConfigError, backbones  # noqa: E402
from keras_fada.training.tasks import TASK_NAMES  # noqa: E402


class UserError(click.UsageError):
    """One line, exit code 2, no usage text."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


def _known_errors():
    from keras_fada.data.datasets import DatasetError
    from keras_fada.training import RunError

    return (ConfigError, DatasetError, RunError)


def user_errors(fn):
    """Converts the library's user-mistake exceptions into :class:`UserError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _known_errors() as e:
            raise UserError(" ".join(str(e).split())) from None

    return wrapper


BACKBONE = click.Choice(backbones())


def _check_task(ctx, param, value):
    if value is not None and value not in TASK_NAMES:
        raise click.BadParameter(f"unknown task {value!r}; tasks: {', '.join(TASK_NAMES)}")
    return value


task_option = click.option(
    "--task", required=True, callback=_check_task, help=f"One of: {', '.join(TASK_NAMES)}."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """FADA (ECCV 2020) in Keras 3: fine-grained adversarial domain adaptation for segmentation."""


# ------------------------------------------------------------------------------------------ train
@cli.command(context_settings={"ignore_unknown_options": False})
@task_option
@click.option("--stage", type=click.Choice([*STAGES, "all"]), default="all", show_default=True)
@click.option("--backbone", type=BACKBONE, default=None, help="Default: the task's (synthetic: small).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML merged on top.")
@click.option("--data-root", default=None, help="Dataset root (default: config data.root = datasets).")
@click.option("--output", default=None, help="Run directory (default: runs/<task>-<backbone>).")
@click.option("--resume", is_flag=True, help="Continue the run in --output.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("overrides", nargs=-1)
@user_errors
def train(task, stage, backbone, config_file, data_root, output, resume, quiet, overrides):
    """Train one stage or the whole chain (source-only -> FADA -> pseudo labels -> self-distillation).

    OVERRIDES are KEY=VALUE with dotted keys, e.g. lambda_adv=0.01 encoder.mode=binary source.steps=500.
    """
    import time

    from keras_fada import config as C

    stages = list(STAGES) if stage == "all" else [stage]
    overrides = list(overrides)
    if data_root:
        overrides.append(f"data.root={data_root}")
    base = None
    if resume and output and os.path.isfile(os.path.join(output, "config.yaml")):
        base = C.read_yaml(os.path.join(output, "config.yaml"))
    cfg = C.load_config(task, backbone, config_file, overrides, base=base)
    output = output or os.path.join("runs", f"{task}-{cfg['backbone']}")
    if resume and not os.path.isdir(output):
        raise UserError(f"nothing to resume in {output!r}; run without --resume to start it")
    from keras_fada.training.stages import run_stages  # the backend loads here, after every check

    t0 = time.perf_counter()
    summary = run_stages(cfg, stages, output, resume=resume, verbose=0 if quiet else 1, report=click.echo)
    _print_summary(summary, time.perf_counter() - t0, output)


def _print_summary(summary, seconds, output):
    stages = summary["stages"]
    src = stages.get("source", {}).get("miou")
    click.echo("")
    click.echo(f"{'stage':<10}{'target mIoU':>12}{'vs source-only':>16}")
    for name in STAGES:
        if name not in stages or "miou" not in stages[name]:
            continue
        m = stages[name]["miou"]
        gain = "" if name == "source" or src is None else f"{m - src:+.2f}"
        extra = f"   mIoU* {stages[name]['miou13']:.2f}" if "miou13" in stages[name] else ""
        click.echo(f"{name:<10}{m:>12.2f}{gain:>16}{extra}")
    click.echo(f"run directory: {output} ({seconds:.0f} s)")


# ------------------------------------------------------------------------------------------ evaluate
def _checkpoint_setup(task, checkpoint, backbone, data_root, config_file, overrides):
    """(cfg, backbone, freeze_bn) for a checkpoint: the run's config next to it when present."""
    from keras_fada import config as C

    if not os.path.isfile(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} does not exist")
    base = None
    near = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.yaml")
    if os.path.isfile(near):
        base = C.read_yaml(near)
        if base.get("task") != task:
            base = None
    overrides = list(overrides)
    if data_root:
        overrides.append(f"data.root={data_root}")
    if base is not None and backbone and backbone != base.get("backbone"):
        base = None
    cfg = C.load_config(task, backbone, config_file, overrides, base=base)
    return cfg


def _scales(multiscale, scales, cfg):
    if scales:
        try:
            return tuple(float(s) for s in scales.split(","))
        except ValueError:
            raise UserError(f"--scales must be comma-separated numbers, got {scales!r}") from None
    if multiscale:
        return tuple(float(s) for s in cfg["eval"]["scales"])
    return (1.0,)


def _size(text):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return (h, w)
    except ValueError:
        raise UserError(f"--size must be HxW, e.g. 512x1024, got {text!r}") from None


@cli.command()
@task_option
@click.option("--checkpoint", required=True, help=".weights.h5 (keras-fada) or official .pth checkpoint.")
@click.option("--backbone", type=BACKBONE, default=None, help="Default: the run's, else the task's.")
@click.option("--multiscale", is_flag=True, help="Fuse the probabilities of eval.scales (0.7,1.0,1.3).")
@click.option("--flip", is_flag=True, help="Also fuse horizontally flipped passes.")
@click.option("--scales", default=None, help="Comma-separated scales, e.g. 0.7,1.0,1.3.")
@click.option("--size", default=None, help="Evaluation input size HxW (default: the stage's eval_size).")
@click.option("--data-root", default=None)
@click.option("--config", "config_file", type=click.Path(), default=None)
@click.option("--output", default=None, help="JSON file (default: <checkpoint>.eval.json).")
@click.argument("overrides", nargs=-1)
@user_errors
def evaluate(
    task, checkpoint, backbone, multiscale, flip, scales, size, data_root, config_file, output, overrides
):
    """Per-class IoU and mIoU on the task's target validation set (also written as JSON)."""
    from keras_fada.evaluation import evaluate_dataset
    from keras_fada.training import tasks
    from keras_fada.training.build import load_segmentor

    cfg = _checkpoint_setup(task, checkpoint, backbone, data_root, config_file, overrides)
    k = int(cfg["num_classes"])
    scale_list = _scales(multiscale, scales, cfg)
    stage = os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))
    size = _size(size) or tuple(cfg[stage if stage in STAGES else "adapt"]["eval_size"])
    segmentor = load_segmentor(checkpoint, cfg["backbone"], k)
    spec = tasks.task_specs(cfg)["target_val"]
    conf = evaluate_dataset(segmentor, spec, k, size=size, batch_size=int(cfg["eval"]["batch_size"]),
                            scales=scale_list, flip=flip)  # fmt: skip
    scores = tasks.reported_scores(task, conf)
    scores.update(task=task, checkpoint=checkpoint, scales=list(scale_list), flip=flip, size=list(size))
    for name, v in scores["iou"].items():
        click.echo(f"{name:<15}{v:>7.2f}")
    click.echo(f"{'mIoU':<15}{scores['miou']:>7.2f}   ({scores['num_classes_reported']} classes)")
    if "miou13" in scores:
        click.echo(f"{'mIoU*':<15}{scores['miou13']:>7.2f}   (13 classes)")
    output = output or _sibling(checkpoint, ".eval.json")
    with open(output, "w") as f:
        json.dump(scores, f, indent=1)
    click.echo(f"wrote {output}")


def _sibling(checkpoint, suffix):
    stem = checkpoint
    for ext in (".weights.h5", ".pth", ".safetensors", ".npz"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return stem + suffix


# ------------------------------------------------------------------------------------------ ccd
@cli.command()
@task_option
@click.option("--checkpoint", required=True)
@click.option("--backbone", type=BACKBONE, default=None)
@click.option(
    "--num-images", type=int, default=2000, show_default=True, help="Images per domain (paper: 2,000)."
)
@click.option("--data-root", default=None)
@click.option("--config", "config_file", type=click.Path(), default=None)
@click.option("--output", default=None, help="Prefix of the JSON and PNG files (default: <checkpoint>.ccd).")
@click.argument("overrides", nargs=-1)
@user_errors
def ccd(task, checkpoint, backbone, num_images, data_root, config_file, output, overrides):
    """Class Center Distance (paper Eq. 9, Fig. 4) on labelled source and target images."""
    from keras_fada import data as kd
    from keras_fada import evaluation
    from keras_fada.training import tasks
    from keras_fada.training.build import load_segmentor

    cfg = _checkpoint_setup(task, checkpoint, backbone, data_root, config_file, overrides)
    k = int(cfg["num_classes"])
    segmentor = load_segmentor(checkpoint, cfg["backbone"], k)
    specs = tasks.task_specs(cfg)
    src = kd.make_supervised_dataset(specs["source_train"], 1, shuffle=True, repeat=False, seed=0)
    tgt = kd.make_eval_dataset(specs["target_val"], 1, size=tuple(cfg["data"]["target_size"]))
    values = evaluation.class_center_distance(segmentor, [src.take(num_images), tgt.take(num_images)], k)
    names = tasks.get_task(task).class_names(k)
    per_class = {n: (None if v != v else round(float(v), 4)) for n, v in zip(names, values, strict=True)}
    finite = [v for v in per_class.values() if v is not None]
    mean = float(sum(finite) / len(finite)) if finite else float("nan")
    for n, v in per_class.items():
        click.echo(f"{n:<15}{'-' if v is None else f'{v:.4f}':>10}")
    click.echo(f"{'mean':<15}{mean:>10.4f}")
    prefix = output or _sibling(checkpoint, ".ccd")
    with open(prefix + ".json", "w") as f:
        json.dump({"task": task, "checkpoint": checkpoint, "ccd": per_class, "mean": mean}, f, indent=1)
    from keras_fada.cli.plots import bar_chart

    bar_chart(per_class, mean, prefix + ".png", title=f"Class Center Distance - {task} (mean {mean:.3f})")
    click.echo(f"wrote {prefix}.json and {prefix}.png")


# ------------------------------------------------------------------------------------------ predict
@cli.command()
@click.option("--checkpoint", required=True)
@click.option("--backbone", type=BACKBONE, default=None, help="Default: the run's, else resnet101.")
@click.option("--num-classes", type=int, default=None, help="Default: the run's, else 19.")
@click.option("--output", default="predictions", show_default=True, help="Output folder.")
@click.option("--size", default=None, help="Resize inputs to HxW before the network (default: as is).")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity.")
@click.argument("images", nargs=-1, required=True)
@user_errors
def predict(checkpoint, backbone, num_classes, output, size, alpha, images):
    """Colourised segmentations (Cityscapes palette) and overlays of IMAGES."""
    import numpy as np
    from PIL import Image

    from keras_fada import config as C
    from keras_fada import evaluation
    from keras_fada.data import labels as L
    from keras_fada.training.build import load_segmentor

    if not os.path.isfile(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} does not exist")
    near = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.yaml")
    run = C.read_yaml(near) if os.path.isfile(near) else {}
    backbone = backbone or run.get("backbone", "resnet101")
    k = num_classes or int(run.get("num_classes", 19))
    segmentor = load_segmentor(checkpoint, backbone, k)
    size = _size(size)
    palette = np.array(L.CITYSCAPES_PALETTE + ((0, 0, 0),) * (256 - len(L.CITYSCAPES_PALETTE)), np.uint8)
    os.makedirs(output, exist_ok=True)
    for path in images:
        try:
            rgb = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError):
            raise UserError(f"cannot read image {path!r}") from None
        x = rgb[None].astype("float32")
        if size:
            x = np.asarray(Image.fromarray(rgb).resize(size[::-1], Image.BICUBIC), "float32")[None]
        pred = evaluation.predict_probabilities(segmentor, x, rgb.shape[:2])[0].argmax(-1)
        colour = palette[pred]
        stem = os.path.splitext(os.path.basename(path))[0]
        Image.fromarray(colour).save(os.path.join(output, f"{stem}_color.png"))
        overlay = (alpha * colour + (1 - alpha) * rgb).astype(np.uint8)
        Image.fromarray(overlay).save(os.path.join(output, f"{stem}_overlay.png"))
        labels = Image.fromarray(pred.astype(np.uint8), mode="P")
        labels.putpalette(L.palette_flat(L.CITYSCAPES_PALETTE))
        labels.save(os.path.join(output, f"{stem}_labels.png"))
        click.echo(f"{path} -> {output}/{stem}_{{color,overlay,labels}}.png")


# ------------------------------------------------------------------------------------------ convert
@cli.command()
@click.argument("src")
@click.argument("dst_prefix")
@click.option("--backbone", type=BACKBONE, default="resnet101", show_default=True)
@click.option("--num-classes", type=int, default=19, show_default=True)
@click.option("--trainable-bn", is_flag=True, help="Trainable BN (the official GTA5 self-distilled model).")
@click.option("--kind", type=click.Choice(["auto", "imagenet", "fada"]), default="auto", show_default=True)
@user_errors
def convert(src, dst_prefix, backbone, num_classes, trainable_bn, kind):
    """Convert an official PyTorch checkpoint (or torchvision ImageNet weights) to Keras .weights.h5."""
    from keras_fada.models.deeplabv2 import convert_checkpoint

    if not os.path.isfile(src):
        raise UserError(f"checkpoint {src!r} does not exist")
    try:
        paths = convert_checkpoint(
            src, dst_prefix, backbone="resnet_small" if backbone == "small" else backbone,
            num_classes=num_classes, frozen_bn=not trainable_bn, kind=kind,
        )  # fmt: skip
    except (ValueError, KeyError) as e:
        raise UserError(" ".join(str(e).split())[:500]) from None
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="keras-fada", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("interrupted; continue with --resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
