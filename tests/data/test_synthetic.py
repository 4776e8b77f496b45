"""The built-in synthetic domain pair: layouts, determinism, cache invalidation, domain shift."""

import json
import os

import numpy as np

from keras_fada import data as kd
from keras_fada.data import synthetic

SMALL = dict(num_source=12, num_source_val=4, num_target_train=6, num_target_val=4, height=32, width=64)


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_layouts_load_through_the_real_loaders(tmp_path):
    specs = kd.synthetic_specs(str(tmp_path), seed=1, **SMALL)
    src, tgt = str(tmp_path / "source"), str(tmp_path / "target")
    assert os.path.isfile(os.path.join(src, "images", "00001.png"))
    assert os.path.isfile(os.path.join(src, "labels", "00012.png"))
    assert len(specs["source_train"].list_files()[0]) == 8 and len(specs["source_val"].list_files()[0]) == 4
    imgs, lbls = specs["target_val"].list_files()
    assert len(imgs) == 4 and all(p.endswith("_leftImg8bit.png") for p in imgs)
    assert os.path.relpath(imgs[0], tgt).startswith(os.path.join("leftImg8bit", "val"))
    assert lbls[0].endswith("_gtFine_labelIds.png") and len(specs["target_train"].list_files()[0]) == 6
    # labels are Cityscapes label ids; through the map they give the generator's train ids
    img, lab = synthetic.generate_sample(1 * 1_000_003 + 0, 32, 64, "source")
    got = kd.read_label(
        os.path.join(src, "labels", "00001.png"), "png8", kd.labels.lookup_table(kd.labels.CITYSCAPES_19_MAP)
    )
    np.testing.assert_array_equal(got, lab)
    np.testing.assert_array_equal(kd.read_image(os.path.join(src, "images", "00001.png")), img)
    x, y = next(iter(kd.make_eval_dataset(specs["target_val"], 2)))
    assert x.shape == (2, 32, 64, 3) and y.shape == (2, 32, 64)
    b = next(iter(kd.make_adaptation_dataset(specs["source_train"], specs["target_train"], 2)))
    assert b["source_images"].shape == (2, 32, 64, 3) and b["target_images"].shape == (2, 32, 64, 3)


def test_street_like_classes_and_layout():
    counts = np.zeros(256, np.int64)
    sky_top, road_bottom = [], []
    for s in range(60):
        _, lab = synthetic.generate_sample(s, 64, 128, "source")
        counts += np.bincount(lab.ravel(), minlength=256)
        sky_top.append(np.mean(lab[0] == 10))
        road_bottom.append(np.mean(lab[-8] == 0))
    present = set(np.flatnonzero(counts[:19]).tolist())
    assert {0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 13} <= present and len(present) >= 16
    assert np.mean(sky_top) > 0.5 and np.mean(road_bottom) > 0.3


def test_deterministic_and_cached(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    kd.ensure_synthetic_pair(str(a), seed=3, **SMALL)
    kd.ensure_synthetic_pair(str(b), seed=3, **SMALL)
    ta, tb = _tree_bytes(str(a)), _tree_bytes(str(b))
    assert ta == tb and len(ta) == 1 + 2 * 12 + 2 + 2 * 10
    marker = a / "source" / "images" / "00001.png"
    mtime = os.path.getmtime(marker)
    kd.ensure_synthetic_pair(str(a), seed=3, **SMALL)  # same parameters: reused
    assert os.path.getmtime(marker) == mtime
    kd.ensure_synthetic_pair(str(a), seed=4, **SMALL)  # another seed: regenerated
    assert _tree_bytes(str(a)) != ta and json.load(open(a / "params.json"))["seed"] == 4
    kd.ensure_synthetic_pair(str(a), seed=4, **{**SMALL, "num_target_val": 2})  # fewer files: no leftovers
    assert len(kd.cityscapes(str(a / "target"), "val").list_files()[0]) == 2


def test_domains_differ_in_appearance_not_layout():
    src = [synthetic.generate_sample(s, 64, 128, "source") for s in range(30)]
    tgt = [synthetic.generate_sample(s, 64, 128, "target") for s in range(30)]
    for cls in (0, 2, 10, 13):  # road, building, sky, car: class colours move between domains
        ms = np.mean([img[lab == cls].mean(0) for img, lab in src if (lab == cls).any()], 0)
        mt = np.mean([img[lab == cls].mean(0) for img, lab in tgt if (lab == cls).any()], 0)
        assert np.abs(ms - mt).max() > 15, cls

    # the target is noisier (texture, sensor noise) than the flat source
    def roughness(img):
        return np.abs(np.diff(img.astype(np.float32), axis=1)).mean()

    assert np.mean([roughness(i) for i, _ in tgt]) > 2 * np.mean([roughness(i) for i, _ in src])


def test_generation_is_fast(tmp_path):
    import time

    t = time.perf_counter()
    kd.ensure_synthetic_pair(
        str(tmp_path),
        num_source=100,
        num_source_val=20,
        num_target_train=60,
        num_target_val=40,
        height=64,
        width=128,
        seed=0,
    )
    assert time.perf_counter() - t < 10.0
