"""``keras-fada predict``: colourised segmentations, overlays and label PNGs of images (train ids,
and Cityscapes label ids for the official evaluator)."""

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


@click.command()
@click.option("--checkpoint", required=True)
@run_option
@click.option("--backbone", type=BACKBONE, default=None, help="Default: the run's, else resnet101.")
@click.option("--num-classes", type=int, default=None, help="Default: the run's, else 19.")
@click.option("--output", default="predictions", show_default=True, help="Output folder.")
@click.option("--size", default=None, help="Resize inputs to HxW before the network (default: as is).")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("images", nargs=-1, required=True)
@user_errors
def predict(checkpoint, backbone, num_classes, output, size, alpha, quiet, images, run_dir=None):
    """Colourised segmentations (Cityscapes colours), overlays, train-id and, for 19, 16 or 13
    classes, Cityscapes label-id PNGs (labelIds/<stem>_labelIds.png, what cityscapesscripts scores) of IMAGES."""
    import numpy as np
    from PIL import Image

    from keras_fada import config as C
    from keras_fada import evaluation
    from keras_fada.data import labels as L
    from keras_fada.training.build import load_segmentor

    checkpoint = resolve_checkpoint(checkpoint, run_dir)
    if not os.path.exists(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} does not exist")
    near = config_near(checkpoint)
    run = C.read_yaml(near) if os.path.isfile(near) else {}
    backbone = backbone or run.get("backbone", "resnet101")
    k = num_classes or int(run.get("num_classes", 19))
    segmentor = load_segmentor(checkpoint, backbone, k)
    size = parse_size(size)
    label_ids = evaluation.cityscapes_label_ids(k)
    if label_ids is None:  # no Cityscapes meaning: train-id colours, no label-id files
        colours = L.CITYSCAPES_PALETTE
    else:  # each class in its Cityscapes colour (SYNTHIA's 16 and Cross-City's 13 too)
        colours = tuple(L.CITYSCAPES_LABEL_ID_PALETTE[i] for i in label_ids)
    palette = np.zeros((256, 3), np.uint8)
    palette[: min(len(colours), 256)] = colours[:256]
    os.makedirs(output, exist_ok=True)
    progress = evaluation.Progress(len(images), verbose=not quiet)
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
        labels.putpalette(palette.reshape(-1).tolist())
        labels.save(os.path.join(output, f"{stem}_labels.png"))
        if label_ids is not None:  # alone in a folder: cityscapesscripts wants one match per image
            os.makedirs(os.path.join(output, "labelIds"), exist_ok=True)
            Image.fromarray(label_ids[pred]).save(os.path.join(output, "labelIds", f"{stem}_labelIds.png"))
        progress.add(1)
    progress.close()
    click.echo(f"wrote <stem>_{{color,overlay,labels}}.png of {len(images)} image(s) to {output}")
    if label_ids is not None:
        click.echo(f"and <stem>_labelIds.png to {output}/labelIds (CITYSCAPES_RESULTS for cityscapesscripts)")
