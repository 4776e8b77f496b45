"""``keras-fada export``: a checkpoint as a SavedModel, an ONNX file or a ``.keras`` file for serving."""

from __future__ import annotations

import os

import click

from keras_fada.cli.common import (
    BACKBONE,
    UserError,
    config_near,
    parse_size,
    resolve_checkpoint,
    run_option,
    user_errors,
)

FORMATS = ("saved_model", "onnx", "keras")  # keras_fada.export.FORMATS, without importing Keras
HEADS = ("logits", "probabilities", "labels")


@click.command()
@click.option("--checkpoint", required=True, help="A preset folder, .keras, .weights.h5 or official .pth.")
@run_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--output", required=True, help="Folder to write (model.onnx, saved_model/ or model.keras).")
@click.option("--size", default=None, help="A fixed input size HxW (default: any height and width).")
@click.option("--head", type=click.Choice(HEADS), default="logits", show_default=True,
              help="Output at input resolution: logits, their softmax, or int32 labels.")  # fmt: skip
@click.option(
    "--backbone", type=BACKBONE, default=None, help="For a .pth: default the run's, else resnet101."
)
@click.option("--num-classes", type=int, default=None, help="For a .pth: default the run's, else 19.")
@user_errors
def export(checkpoint, fmt, output, size, head, backbone, num_classes, run_dir=None):
    """Export a segmentor taking RGB images in [0, 255] (normalised inside) for serving."""
    size = parse_size(size)
    checkpoint = resolve_checkpoint(checkpoint, run_dir)
    if not os.path.exists(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} does not exist")
    from keras_fada import config as C
    from keras_fada.export import ExportError, check_export, export_segmentor
    from keras_fada.training.build import load_segmentor, load_whole_segmentor

    try:
        check_export(fmt, head)  # before loading anything
    except ExportError as e:
        raise UserError(str(e)) from None
    near = config_near(checkpoint)
    run = C.read_yaml(near) if os.path.isfile(near) else {}
    backbone = backbone or run.get("backbone", "resnet101")
    k = num_classes or run.get("num_classes")  # a whole model (preset, .keras) knows its own
    segmentor = load_whole_segmentor(checkpoint, k) or load_segmentor(checkpoint, backbone, int(k or 19))
    path = export_segmentor(segmentor, output, fmt, head=head, size=size)
    click.echo(f"wrote {path}")
