"""Small fabricated dataset trees in exactly the layouts the real datasets ship in (GTA5, SYNTHIA,
Cityscapes, NTHU Cross-City), shared by the data, training and CLI tests."""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_fada import data as kd
from keras_fada.data import labels as L

H, W = 8, 12


def rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_values(seed, values, h=H, w=W):
    return np.random.default_rng(seed).choice(np.asarray(values), size=(h, w))


def save_palette(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(L.palette_flat(L.CITYSCAPES_LABEL_ID_PALETTE))
    im.save(path)


def save_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def make_gta5(root, n=4, h=H, w=W):
    raws = []
    for i in range(n):
        name = f"{i + 1:05d}.png"
        save_png(os.path.join(root, "images", name), rgb(i, h, w))
        raw = raw_values(100 + i, list(range(0, 40)) + [255], h, w).astype(np.uint8)
        save_palette(os.path.join(root, "labels", name), raw)
        raws.append(raw)
    return raws


def make_synthia(root, n=3):
    raws = []
    for i in range(n):
        name = f"{i:07d}.png"
        save_png(os.path.join(root, "RAND_CITYSCAPES", "RGB", name), rgb(i))
        cls = raw_values(200 + i, list(range(0, 23)) + [300, 65535]).astype(np.uint16)
        inst = np.random.default_rng(i).integers(0, 65535, (H, W, 2)).astype(np.uint16)
        lbl = np.concatenate([cls[..., None], inst], axis=-1)  # class id in channel 0, 16-bit, 3 channels
        path = os.path.join(root, "RAND_CITYSCAPES", "GT", "LABELS", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(tf.constant(lbl)))
        raws.append(cls)
    return raws


def make_cityscapes(root, split="train", cities=("aachen", "bonn"), per_city=2):
    out = {}
    for c, city in enumerate(cities):
        for j in range(per_city):
            stem = f"{city}_{j:06d}_{19 + j:06d}"
            save_png(
                os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"), rgb(c * 10 + j)
            )
            raw = raw_values(300 + c * 10 + j, list(range(-1, 34)) + [250]).astype(np.int64) % 256
            raw = raw.astype(np.uint8)
            save_png(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"), raw)
            out[f"{city}/{stem}_leftImg8bit.png"] = raw
    return out


def make_crosscity(root, city="Rome", n_train=3, n_test=2, with_list=False):
    for i in range(n_train):
        save_png(os.path.join(root, city, "Images", "Train", f"pano_{i:05d}_0_0.png"), rgb(i))
    raws = {}
    for i in range(n_test):
        stem = f"pano_{i:05d}_1_180"
        save_png(os.path.join(root, city, "Images", "Test", f"{stem}.png"), rgb(50 + i))
        raw = raw_values(400 + i, list(range(0, 34))).astype(np.uint8)
        save_png(os.path.join(root, city, "Labels", "Test", f"{stem}_eval.png"), raw)
        raws[stem] = raw
    if with_list:
        os.makedirs(os.path.join(root, city, "List"), exist_ok=True)
        with open(os.path.join(root, city, "List", "test.txt"), "w") as f:
            f.write(f"pano_{n_test - 1:05d}_1_180\n")
    return raws


def labels_of(spec):
    ds = kd.make_eval_dataset(spec, 1, size=None)
    return [y[0] for _, y in ds.as_numpy_iterator()]
