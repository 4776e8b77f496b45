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


def make_gta5(root, n=4, h=H, w=W, values=(*range(0, 40), 255)):
    """GTA5: palette PNGs of label ids; the default ``values`` include 34-39, which no real label holds."""
    raws = []
    for i in range(n):
        name = f"{i + 1:05d}.png"
        save_png(os.path.join(root, "images", name), rgb(i, h, w))
        raw = raw_values(100 + i, list(values), h, w).astype(np.uint8)
        save_palette(os.path.join(root, "labels", name), raw)
        raws.append(raw)
    return raws


def make_synthia(root, n=3, values=(*range(0, 23), 300, 65535)):
    """SYNTHIA: 16-bit 3-channel labels, class id in channel 0; 300 and 65535 are no class ids."""
    raws = []
    for i in range(n):
        name = f"{i:07d}.png"
        save_png(os.path.join(root, "RAND_CITYSCAPES", "RGB", name), rgb(i))
        cls = raw_values(200 + i, list(values)).astype(np.uint16)
        inst = np.random.default_rng(i).integers(0, 65535, (H, W, 2)).astype(np.uint16)
        lbl = np.concatenate([cls[..., None], inst], axis=-1)  # class id in channel 0, 16-bit, 3 channels
        path = os.path.join(root, "RAND_CITYSCAPES", "GT", "LABELS", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(tf.constant(lbl)))
        raws.append(cls)
    return raws


def make_cityscapes(root, split="train", cities=("aachen", "bonn"), per_city=2, values=(*range(-1, 34), 250)):
    """Cityscapes: grey label-id PNGs; the default ``values`` include 250, which no real label holds."""
    out = {}
    for c, city in enumerate(cities):
        for j in range(per_city):
            stem = f"{city}_{j:06d}_{19 + j:06d}"
            save_png(
                os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"), rgb(c * 10 + j)
            )
            raw = raw_values(300 + c * 10 + j, list(values)).astype(np.int64) % 256
            raw = raw.astype(np.uint8)
            save_png(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"), raw)
            out[f"{city}/{stem}_leftImg8bit.png"] = raw
    return out


def save_jpg(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def make_crosscity(
    root, city="Rome", n_train=3, n_test=2, with_list=False, train_ext=".png", test_exts=(".png",),
    lists=None, list_ext=False,
):  # fmt: skip
    """An NTHU Cross-City city under ``root`` (the ``NTHU_Datasets`` folder). Images get ``train_ext``
    and, test image i, ``test_exts[i % len]`` (Rio's test set mixes .png and .jpg). ``lists="nthu"``
    writes full ``train.txt``/``test.txt`` lists of stems (``list_ext``: with extensions) where they
    ship, ``<root>/../NTHU_list/<City>/List/``; ``with_list`` a one-entry ``<City>/List/test.txt``.
    Returns ``{stem: raw label}`` of the test images."""
    save = {".png": save_png, ".jpg": save_jpg}
    train_names = []
    for i in range(n_train):
        name = f"pano_{i:05d}_0_0{train_ext}"
        save[train_ext](os.path.join(root, city, "Images", "Train", name), rgb(i))
        train_names.append(name)
    raws, test_names = {}, []
    for i in range(n_test):
        stem, ext = f"pano_{i:05d}_1_180", test_exts[i % len(test_exts)]
        save[ext](os.path.join(root, city, "Images", "Test", f"{stem}{ext}"), rgb(50 + i))
        raw = raw_values(400 + i, list(range(0, 34))).astype(np.uint8)
        save_png(os.path.join(root, city, "Labels", "Test", f"{stem}_eval.png"), raw)
        raws[stem] = raw
        test_names.append(f"{stem}{ext}")
    if with_list:
        os.makedirs(os.path.join(root, city, "List"), exist_ok=True)
        with open(os.path.join(root, city, "List", "test.txt"), "w") as f:
            f.write(f"pano_{n_test - 1:05d}_1_180\n")
    if lists == "nthu":
        folder = os.path.join(os.path.dirname(os.path.abspath(root)), "NTHU_list", city, "List")
        os.makedirs(folder, exist_ok=True)
        for split, names in (("train", train_names), ("test", test_names)):
            entries = names if list_ext else [os.path.splitext(n)[0] for n in names]
            with open(os.path.join(folder, f"{split}.txt"), "w") as f:
                f.write("\n".join(entries) + "\n")
    return raws


def labels_of(spec):
    ds = kd.make_eval_dataset(spec, 1, size=None)
    return [y[0] for _, y in ds.as_numpy_iterator()]
