"""Loaders, label maps, bad data, sampler and pipeline of keras_fada.data on fabricated trees laid out
exactly like the real datasets.  Runs on every Keras backend (the pipeline itself is tf.data)."""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_fada import data as kd
from keras_fada.data import labels as L

# ---------------------------------------------------------------- expected tables, written independently
# From official-code-facts.md section 6 (JDAI-CV/FADA core/datasets).
EXPECTED_CS19 = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
EXPECTED_CS16 = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10, 25: 11, 26: 12,
    28: 13, 32: 14, 33: 15,
}  # fmt: skip
EXPECTED_SYNTHIA16 = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13,
    12: 14, 11: 15,
}  # fmt: skip
# NTHU Cross-City: road, sidewalk, building, light, sign, vegetation, sky, person, rider, car, bus,
# motorcycle, bicycle (Cityscapes label ids 7, 8, 11, 19, 20, 21, 23, 24, 25, 26, 28, 32, 33).
EXPECTED_CC13 = {7: 0, 8: 1, 11: 2, 19: 3, 20: 4, 21: 5, 23: 6, 24: 7, 25: 8, 26: 9, 28: 10, 32: 11, 33: 12}


def _dense(mapping, size=256):
    return np.array([mapping.get(v, 255) for v in range(size)], np.uint8)


@pytest.mark.parametrize(
    "table,expected",
    [
        (L.CITYSCAPES_19_MAP, EXPECTED_CS19),
        (L.CITYSCAPES_16_MAP, EXPECTED_CS16),
        (L.SYNTHIA_16_MAP, EXPECTED_SYNTHIA16),
        (L.CROSSCITY_13_MAP, EXPECTED_CC13),
    ],
)
def test_label_maps_match_official_tables(table, expected):
    assert table == expected
    np.testing.assert_array_equal(L.lookup_table(table), _dense(expected))


def test_class_names_and_palette():
    assert len(L.CITYSCAPES_19_CLASSES) == 19 and len(L.SYNTHIA_16_CLASSES) == 16
    assert len(L.CROSSCITY_13_CLASSES) == 13 and len(L.CITYSCAPES_PALETTE) == 19
    assert L.CITYSCAPES_19_CLASSES[10] == "sky" and L.SYNTHIA_16_CLASSES[9] == "sky"
    assert L.CROSSCITY_13_CLASSES == (
        "road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky", "person",
        "rider", "car", "bus", "motorcycle", "bicycle",
    )  # fmt: skip
    for label_id, train_id in EXPECTED_CS19.items():  # palette by label id agrees with the train-id one
        assert L.CITYSCAPES_LABEL_ID_PALETTE[label_id] == L.CITYSCAPES_PALETTE[train_id]
    assert L.apply_label_map(np.array([7, 300, -1, 33]), L.lookup_table(EXPECTED_CS19)).tolist() == [
        0, 255, 255, 18
    ]  # fmt: skip


# ---------------------------------------------------------------- fabricated trees
H, W = 8, 12


def _rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _raw_values(seed, values, h=H, w=W):
    return np.random.default_rng(seed).choice(np.asarray(values), size=(h, w))


def _save_palette(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(L.palette_flat(L.CITYSCAPES_LABEL_ID_PALETTE))
    im.save(path)


def _save_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def make_gta5(root, n=4, h=H, w=W):
    raws = []
    for i in range(n):
        name = f"{i + 1:05d}.png"
        _save_png(os.path.join(root, "images", name), _rgb(i, h, w))
        raw = _raw_values(100 + i, list(range(0, 40)) + [255], h, w).astype(np.uint8)
        _save_palette(os.path.join(root, "labels", name), raw)
        raws.append(raw)
    return raws


def make_synthia(root, n=3):
    raws = []
    for i in range(n):
        name = f"{i:07d}.png"
        _save_png(os.path.join(root, "RAND_CITYSCAPES", "RGB", name), _rgb(i))
        cls = _raw_values(200 + i, list(range(0, 23)) + [300, 65535]).astype(np.uint16)
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
            _save_png(
                os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"), _rgb(c * 10 + j)
            )
            raw = _raw_values(300 + c * 10 + j, list(range(-1, 34)) + [250]).astype(np.int64) % 256
            raw = raw.astype(np.uint8)
            _save_png(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"), raw)
            out[f"{city}/{stem}_leftImg8bit.png"] = raw
    return out


def make_crosscity(root, city="Rome", n_train=3, n_test=2, with_list=False):
    for i in range(n_train):
        _save_png(os.path.join(root, city, "Images", "Train", f"pano_{i:05d}_0_0.png"), _rgb(i))
    raws = {}
    for i in range(n_test):
        stem = f"pano_{i:05d}_1_180"
        _save_png(os.path.join(root, city, "Images", "Test", f"{stem}.png"), _rgb(50 + i))
        raw = _raw_values(400 + i, list(range(0, 34))).astype(np.uint8)
        _save_png(os.path.join(root, city, "Labels", "Test", f"{stem}_eval.png"), raw)
        raws[stem] = raw
    if with_list:
        os.makedirs(os.path.join(root, city, "List"), exist_ok=True)
        with open(os.path.join(root, city, "List", "test.txt"), "w") as f:
            f.write(f"pano_{n_test - 1:05d}_1_180\n")
    return raws


def _labels_of(spec):
    ds = kd.make_eval_dataset(spec, 1, size=None)
    return [y[0] for _, y in ds.as_numpy_iterator()]


# ---------------------------------------------------------------- exact train ids per dataset
def test_gta5_palette_png_gives_label_ids_then_train_ids(tmp_path):
    raws = make_gta5(str(tmp_path))
    spec = kd.gta5(str(tmp_path))
    got = _labels_of(spec)
    assert len(got) == 4
    for raw, lbl in zip(raws, got, strict=True):
        assert lbl.dtype == np.int32 and lbl.shape == (H, W)
        np.testing.assert_array_equal(lbl, _dense(EXPECTED_CS19)[raw])
    assert (got[0] == 255).any() and set(np.unique(np.concatenate(got))) <= set(range(19)) | {255}


def test_synthia_16bit_three_channel_labels(tmp_path):
    raws = make_synthia(str(tmp_path))
    got = _labels_of(kd.synthia(str(tmp_path)))
    for raw, lbl in zip(raws, got, strict=True):
        expected = np.array([EXPECTED_SYNTHIA16.get(int(v), 255) for v in raw.ravel()]).reshape(raw.shape)
        np.testing.assert_array_equal(lbl, expected)
    # the image is what was written
    img = kd.read_image(os.path.join(str(tmp_path), "RAND_CITYSCAPES", "RGB", "0000000.png"))
    np.testing.assert_array_equal(img, _rgb(0))


@pytest.mark.parametrize("num_classes,table", [(19, EXPECTED_CS19), (16, EXPECTED_CS16)])
def test_cityscapes_label_ids(tmp_path, num_classes, table):
    raws = make_cityscapes(str(tmp_path), "val")
    spec = kd.cityscapes(str(tmp_path), "val", num_classes=num_classes)
    images, labels = spec.list_files()
    assert [os.path.relpath(p, os.path.join(str(tmp_path), "leftImg8bit", "val")) for p in images] == sorted(
        raws
    )
    assert labels[0].endswith(
        os.path.join("gtFine", "val", "aachen", "aachen_000000_000019_gtFine_labelIds.png")
    )
    for key, lbl in zip(sorted(raws), _labels_of(spec), strict=True):
        np.testing.assert_array_equal(lbl, _dense(table)[raws[key]])
    assert spec.num_classes == num_classes


def test_cityscapes_list_file_and_unlabelled(tmp_path):
    raws = make_cityscapes(str(tmp_path), "train")
    lst = tmp_path / "cityscapes_train_list.txt"
    lst.write_text("bonn/bonn_000001_000020_leftImg8bit.png\naachen/aachen_000000_000019_leftImg8bit.png\n")
    spec = kd.cityscapes(str(tmp_path), "train", list_file=str(lst))
    got = _labels_of(spec)
    np.testing.assert_array_equal(
        got[0], _dense(EXPECTED_CS19)[raws["bonn/bonn_000001_000020_leftImg8bit.png"]]
    )
    assert len(got) == 2
    unl = kd.cityscapes(str(tmp_path), "train", labelled=False)
    assert unl.list_files()[1] is None and len(unl.list_files()[0]) == 4


@pytest.mark.parametrize("num_classes,table", [(19, EXPECTED_CS19), (13, EXPECTED_CC13)])
def test_crosscity(tmp_path, num_classes, table):
    raws = make_crosscity(str(tmp_path))
    spec = kd.crosscity(str(tmp_path), "Rome", "test", num_classes=num_classes)
    for stem, lbl in zip(sorted(raws), _labels_of(spec), strict=True):
        np.testing.assert_array_equal(lbl, _dense(table)[raws[stem]])
    train = kd.crosscity(str(tmp_path), "Rome", "train")
    images, labels = train.list_files()
    assert labels is None and len(images) == 3
    batch = next(iter(kd.make_inference_dataset(train, 1, size=(4, 6))))
    assert batch[0].shape == (1, 4, 6, 3)
    with pytest.raises(ValueError, match="city"):
        kd.crosscity(str(tmp_path), "Paris")


def test_crosscity_city_list_file(tmp_path):
    make_crosscity(str(tmp_path), with_list=True)
    images, labels = kd.crosscity(str(tmp_path), "Rome", "test").list_files()
    assert [os.path.basename(p) for p in images] == ["pano_00001_1_180.png"]
    assert labels[0].endswith("pano_00001_1_180_eval.png")


def test_pseudo_labels_with_labels(tmp_path):
    make_cityscapes(str(tmp_path), "train")
    pl = tmp_path / "pseudo"
    spec = kd.cityscapes(str(tmp_path), "train")
    for img in spec.list_files()[0]:
        base = os.path.basename(img)
        _save_palette(str(pl / base), np.full((H, W), 13, np.uint8))
    pseudo = spec.with_labels(str(pl), label_suffix="_leftImg8bit.png")
    got = _labels_of(pseudo)
    assert len(got) == 4 and all((g == 13).all() for g in got)


# ---------------------------------------------------------------- bad data
def test_missing_root_and_split(tmp_path):
    with pytest.raises(kd.DatasetError, match=r"does not exist; expected <root>/images/NNNNN.png"):
        kd.gta5(str(tmp_path / "nowhere")).list_files()
    make_cityscapes(str(tmp_path), "train")
    with pytest.raises(kd.DatasetError, match=r"leftImg8bit/val.*expected <root>/leftImg8bit/val/<city>"):
        kd.cityscapes(str(tmp_path), "val").list_files()
    assert issubclass(kd.DatasetError, ValueError)


def test_image_without_label_and_label_without_image(tmp_path):
    make_gta5(str(tmp_path))
    os.remove(tmp_path / "labels" / "00002.png")
    with pytest.raises(kd.DatasetError) as e:
        kd.gta5(str(tmp_path)).list_files()
    assert "images/00002.png" in str(e.value) and "labels/00002.png" in str(e.value)
    os.remove(tmp_path / "images" / "00002.png")
    _save_palette(str(tmp_path / "labels" / "00009.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(kd.DatasetError) as e:
        kd.gta5(str(tmp_path)).list_files()
    assert "labels/00009.png" in str(e.value) and "images/00009.png" in str(e.value)


def test_list_file_entry_missing(tmp_path):
    make_gta5(str(tmp_path))
    lst = tmp_path / "list.txt"
    lst.write_text("00001.png\n00077.png\n")
    with pytest.raises(kd.DatasetError, match="00077.png"):
        kd.gta5(str(tmp_path), list_file=str(lst)).list_files()


@pytest.mark.parametrize("which", ["images", "labels"])
def test_truncated_png_names_the_file(tmp_path, which):
    make_gta5(str(tmp_path))
    path = tmp_path / which / "00003.png"
    path.write_bytes(path.read_bytes()[:60])
    ds = kd.make_eval_dataset(kd.gta5(str(tmp_path)), 1)
    with pytest.raises(Exception, match=r"00003\.png"):
        for _ in ds:
            pass
    with pytest.raises(kd.DatasetError, match=r"00003\.png"):
        if which == "images":
            kd.read_image(str(path))
        else:
            kd.read_label(str(path), "png8", L.lookup_table(EXPECTED_CS19))


def test_size_mismatch_is_reported_once_and_resized(tmp_path):
    make_gta5(str(tmp_path))
    _save_palette(str(tmp_path / "labels" / "00002.png"), np.full((H + 2, W + 4), 7, np.uint8))
    spec = kd.gta5(str(tmp_path), train_size=(4, 6))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = kd.make_supervised_dataset(spec, 4, shuffle=False, repeat=False)
        kd.make_supervised_dataset(spec, 4, shuffle=False, repeat=False)
    msgs = [str(r.message) for r in rec if "differ in size" in str(r.message)]
    assert len(msgs) == 1 and "00002.png" in msgs[0] and "images" in msgs[0] and "labels" in msgs[0]
    x, y = next(iter(ds))
    assert x.shape == (4, 4, 6, 3) and y.shape == (4, 4, 6)
    assert (y.numpy()[1] == 0).all()
    # self-distillation path (no fixed resize): the label is resized to its image, deterministically
    sd = kd.make_self_distillation_dataset(spec, 4, crop_size=(6, 8), seed=3)
    a, b = next(iter(sd))[1].numpy(), next(iter(sd))[1].numpy()
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- class-balanced sampling
def _rare_class_tree(root, n=40):
    for i in range(n):
        name = f"{i + 1:05d}.png"
        _save_png(os.path.join(root, "images", name), _rgb(i, 4, 4))
        raw = np.full((4, 4), 7, np.uint8)  # road everywhere
        raw[0, 0] = 26 if i % 2 else 23  # car or sky in every file
        if i == 5:
            raw[1, 1] = 33  # bicycle in one file only
        _save_palette(os.path.join(root, "labels", name), raw)


def test_class_presence_cached_beside_the_data(tmp_path, monkeypatch):
    _rare_class_tree(str(tmp_path))
    spec = kd.gta5(str(tmp_path))
    stats = kd.class_presence(spec)
    assert stats[5] == [0, 13, 18] and stats[1] == [0, 13] and stats[0] == [0, 10]
    cache = kd.class_presence_cache_path(spec)
    assert os.path.dirname(cache) == str(tmp_path) and os.path.isfile(cache)
    assert json.load(open(cache))["files"][0] == os.path.join("labels", "00001.png")

    def boom(*a, **k):
        raise AssertionError("labels decoded again")

    monkeypatch.setattr(kd.io, "read_label", boom)
    assert kd.class_presence(spec) == stats  # from the cache
    _save_palette(str(tmp_path / "labels" / "00001.png"), np.full((4, 4), 24, np.uint8))  # changed file
    with pytest.raises(AssertionError, match="decoded again"):
        kd.class_presence(spec)


def test_class_balanced_sampler_statistics_and_seed(tmp_path):
    _rare_class_tree(str(tmp_path))
    spec = kd.gta5(str(tmp_path))
    idx = kd.balanced_indices(spec, num_samples=3000, seed=1)
    assert idx.shape == (3000,) and idx.min() >= 0 and idx.max() < 40
    rare_share = np.mean(idx == 5)
    assert rare_share > 10 * (1 / 40)  # far more often than its file frequency of 2.5 %
    np.testing.assert_array_equal(idx, kd.balanced_indices(spec, num_samples=3000, seed=1))
    assert not np.array_equal(idx, kd.balanced_indices(spec, num_samples=3000, seed=2))
    # the official weights: uniform at the start of a sub-epoch
    s = kd.ClassBalancedSampler([[0], [1], [0, 1]], 3, seed=0, sub_epoch=4)
    out = s.draw(8)
    assert out.shape == (8,) and set(out.tolist()) <= {0, 1, 2}
    ds = kd.make_supervised_dataset(spec, 2, size=(4, 4), class_balanced=True, num_samples=3000, seed=1)
    assert next(iter(ds))[1].shape == (2, 4, 4)


# ---------------------------------------------------------------- pipeline
def test_adaptation_batches_structure_jitter_and_seed(tmp_path):
    make_gta5(str(tmp_path / "gta"), n=4, h=10, w=16)
    make_cityscapes(str(tmp_path / "cs"), "train")
    src = kd.gta5(str(tmp_path / "gta"), train_size=(6, 10))
    tgt = kd.cityscapes(str(tmp_path / "cs"), "train", train_size=(4, 8))
    ds = kd.make_adaptation_dataset(src, tgt, 2, seed=5)
    b = next(iter(ds))
    assert set(b) == {"source_images", "source_labels", "target_images"}
    assert b["source_images"].shape == (2, 6, 10, 3) and b["source_images"].dtype == tf.float32
    assert b["source_labels"].shape == (2, 6, 10) and b["source_labels"].dtype == tf.int32
    assert b["target_images"].shape == (2, 4, 8, 3) and b["target_images"].dtype == tf.float32
    # reproducible
    b2 = next(iter(kd.make_adaptation_dataset(src, tgt, 2, seed=5)))
    for k in b:
        np.testing.assert_array_equal(b[k].numpy(), b2[k].numpy())
    # jitter on the source only: without jitter the target batch is identical, the source is not
    plain = next(iter(kd.make_adaptation_dataset(src, tgt, 2, seed=5, jitter=False)))
    np.testing.assert_array_equal(plain["target_images"].numpy(), b["target_images"].numpy())
    np.testing.assert_array_equal(plain["source_labels"].numpy(), b["source_labels"].numpy())
    assert np.abs(plain["source_images"].numpy() - b["source_images"].numpy()).max() > 1.0
    x = b["source_images"].numpy()
    assert 0.0 <= x.min() and x.max() <= 255.0
    # every backend takes the batch as NumPy
    conv = keras.tree.map_structure(lambda t: keras.ops.convert_to_tensor(np.asarray(t)), b)
    assert keras.ops.shape(conv["source_labels"]) == (2, 6, 10)


def test_color_jitter_matches_torchvision_semantics():
    img = tf.constant(np.random.default_rng(0).uniform(0, 255, (5, 7, 3)).astype(np.float32))
    seed = tf.constant([1, 2], tf.int64)
    same = kd.color_jitter(img, seed, (0, 0, 0, 0))
    np.testing.assert_allclose(same.numpy(), img.numpy(), atol=1e-3)
    out = kd.color_jitter(img, seed, (0.5, 0.0, 0.0, 0.0)).numpy()  # brightness only: one factor
    ratio = out / np.maximum(img.numpy(), 1e-3)
    ok = out < 254.9
    assert 0.5 <= np.median(ratio[ok]) <= 1.5 and np.allclose(ratio[ok], np.median(ratio[ok]), atol=1e-3)
    np.testing.assert_array_equal(kd.color_jitter(img, seed).numpy(), kd.color_jitter(img, seed).numpy())


def test_scale_crop_pads_labels_with_255_and_images_with_0():
    img = tf.fill([4, 6, 3], 100.0)
    lbl = tf.fill([4, 6], tf.constant(3, tf.uint8))
    x, y = kd.random_scale_crop_flip(img, lbl, tf.constant([0, 1], tf.int64), (1.0, 1.0), (8, 10), 0.0)
    x, y = x.numpy(), y.numpy()
    assert x.shape == (8, 10, 3) and y.shape == (8, 10)
    assert (y == 255).sum() == 8 * 10 - 4 * 6 and (y == 3).sum() == 24
    assert (x[y == 255] == 0).all() and np.allclose(x[y == 3], 100.0)


def test_self_distillation_dataset(tmp_path):
    make_cityscapes(str(tmp_path), "train")
    spec = kd.cityscapes(str(tmp_path), "train")
    ds = kd.make_self_distillation_dataset(spec, 2, crop_size=(10, 14), scale_range=(0.5, 1.5), seed=0)
    batches = [b for b in ds.take(6)]
    for x, y in batches:
        assert x.shape == (2, 10, 14, 3) and y.shape == (2, 10, 14) and y.dtype == tf.int32
    assert any((y.numpy() == 255).any() for _, y in batches)  # small scales need padding


def test_eval_keeps_full_resolution_labels(tmp_path):
    make_cityscapes(str(tmp_path), "val")
    spec = kd.cityscapes(str(tmp_path), "val", eval_size=(4, 6))
    x, y = next(iter(kd.make_eval_dataset(spec, 2)))
    assert x.shape == (2, 4, 6, 3) and y.shape == (2, H, W) and y.dtype == tf.int32


def test_supervised_dataset_in_model_fit(tmp_path):
    make_gta5(str(tmp_path))
    spec = kd.gta5(str(tmp_path), train_size=(8, 8))
    ds = kd.make_supervised_dataset(spec, 2, jitter=True, flip_prob=0.5, seed=0)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(19, 1)(keras.layers.Rescaling(1 / 255.0)(inputs)))
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    )
    hist = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
