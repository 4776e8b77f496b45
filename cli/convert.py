"""``keras-fada convert``: official PyTorch checkpoints and ImageNet weights to Keras files."""

from __future__ import annotations

import os

import click

from keras_fada.cli.common import BACKBONE, UserError, user_errors


@click.command()
@click.argument("src")
@click.argument("dst_prefix")
@click.option("--backbone", type=BACKBONE, default="resnet101", show_default=True)
@click.option("--num-classes", type=int, default=19, show_default=True)
@click.option("--trainable-bn", is_flag=True, help="Trainable BN (the official GTA5 self-distilled model).")
@click.option("--kind", type=click.Choice(["auto", "imagenet", "fada"]), default="auto", show_default=True)
@click.option("--preset", is_flag=True, help="Write DST_PREFIX as a preset folder (usable as --checkpoint).")
@click.option("--task", default=None, help="With --preset: the task (config, class names) it belongs to.")
@click.option(
    "--eval-json", default=None, help="With --preset: a `keras-fada evaluate` JSON: its mIoU and how."
)
@user_errors
def convert(src, dst_prefix, backbone, num_classes, trainable_bn, kind, preset, task, eval_json):
    """Convert an official PyTorch checkpoint (or torchvision ImageNet weights) to Keras .weights.h5,
    or with --preset to a preset folder (config, weights and metadata)."""
    from keras_fada.models.deeplabv2 import convert_checkpoint

    if not os.path.isfile(src):
        raise UserError(f"checkpoint {src!r} does not exist")
    if preset:
        from keras_fada.training.build import preset_from_checkpoint

        path = preset_from_checkpoint(
            src,
            dst_prefix,
            backbone,
            num_classes,
            not trainable_bn,
            kind=kind,
            task=task,
            eval_json=eval_json,
        )
        click.echo(f"preset: {path}")
        return
    try:
        paths = convert_checkpoint(
            src, dst_prefix, backbone="resnet_small" if backbone == "small" else backbone,
            num_classes=num_classes, frozen_bn=not trainable_bn, kind=kind,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - torch/pickle/numpy raise many types for a file that is no checkpoint
        text = " ".join(str(e).split())[:300]
        raise UserError(
            f"cannot convert {src!r}: expected an official FADA checkpoint or ImageNet weights "
            f"(.pth, .safetensors or .npz) of a {backbone} network with {num_classes} classes "
            f"({type(e).__name__}: {text})"
        ) from None
    for name, path in paths.items():
        click.echo(f"{name}: {path}")
