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
