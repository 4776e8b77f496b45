"""The teacher's pseudo labels for self-distillation (official ``test.py --saveres``)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from keras_fada import data as kd
from keras_fada import evaluation
from keras_fada.data import labels as L


def write_pseudo_labels(segmentor, spec, out_dir, size=None, batch_size=1, verbose=True) -> int:
    """Hard (argmax) labels of ``spec``'s images as palette PNGs ``<out_dir>/<stem>.png`` at each
    image's original size (read from the PNG or JPEG header); returns their number.
    ``verbose``: a progress bar (images/s, ETA) and a closing line."""
    os.makedirs(out_dir, exist_ok=True)
    ds = kd.make_inference_dataset(spec, batch_size, size=tuple(size) if size else "eval")
    palette = L.palette_flat(L.CITYSCAPES_PALETTE)
    n = 0
    progress = evaluation.Progress(len(spec), verbose)
    for images, paths in ds.as_numpy_iterator():
        paths = [p.decode() for p in paths]
        sizes = [kd.datasets.image_size(p) or tuple(images.shape[1:3]) for p in paths]
        for size in dict.fromkeys(sizes):  # one pass per distinct original size in the batch
            rows = [i for i, s in enumerate(sizes) if s == size]
            probs = evaluation.predict_probabilities(segmentor, images[rows], size)
            for i, pred in zip(rows, probs.argmax(-1).astype(np.uint8), strict=True):
                img = Image.fromarray(pred, mode="P")
                img.putpalette(palette)
                img.save(os.path.join(out_dir, os.path.basename(spec.stem(paths[i])) + ".png"))
                n += 1
        progress.add(len(paths))
    progress.close()
    if verbose:
        print(f"wrote {n} pseudo labels to {out_dir}")
    return n
