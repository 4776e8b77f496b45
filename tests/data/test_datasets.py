"""Dataset specs on fabricated trees laid out exactly like the real datasets: label maps against the
official tables, exact train ids per dataset, and bad data named by its path."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from keras_fada import data as kd
from keras_fada.data import labels as L
from tests.support.data_trees import (
    H,
    W,
    labels_of,
    make_cityscapes,
    make_crosscity,
    make_gta5,
    make_synthia,
    rgb,
    save_jpg,
    save_palette,
)

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


# ---------------------------------------------------------------- exact train ids per dataset
def test_gta5_palette_png_gives_label_ids_then_train_ids(tmp_path):
    raws = make_gta5(str(tmp_path))
    spec = kd.gta5(str(tmp_path))
    got = labels_of(spec)
    assert len(got) == 4
    for raw, lbl in zip(raws, got, strict=True):
        assert lbl.dtype == np.int32 and lbl.shape == (H, W)
        np.testing.assert_array_equal(lbl, _dense(EXPECTED_CS19)[raw])
    assert (got[0] == 255).any() and set(np.unique(np.concatenate(got))) <= set(range(19)) | {255}


def test_synthia_16bit_three_channel_labels(tmp_path):
    raws = make_synthia(str(tmp_path))
    got = labels_of(kd.synthia(str(tmp_path)))
    for raw, lbl in zip(raws, got, strict=True):
        expected = np.array([EXPECTED_SYNTHIA16.get(int(v), 255) for v in raw.ravel()]).reshape(raw.shape)
        np.testing.assert_array_equal(lbl, expected)
    # the image is what was written
    img = kd.read_image(os.path.join(str(tmp_path), "RAND_CITYSCAPES", "RGB", "0000000.png"))
    np.testing.assert_array_equal(img, rgb(0))


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
    for key, lbl in zip(sorted(raws), labels_of(spec), strict=True):
        np.testing.assert_array_equal(lbl, _dense(table)[raws[key]])
    assert spec.num_classes == num_classes


def test_cityscapes_list_file_and_unlabelled(tmp_path):
    raws = make_cityscapes(str(tmp_path), "train")
    lst = tmp_path / "cityscapes_train_list.txt"
    lst.write_text("bonn/bonn_000001_000020_leftImg8bit.png\naachen/aachen_000000_000019_leftImg8bit.png\n")
    spec = kd.cityscapes(str(tmp_path), "train", list_file=str(lst))
    got = labels_of(spec)
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
    for stem, lbl in zip(sorted(raws), labels_of(spec), strict=True):
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
        save_palette(str(pl / base), np.full((H, W), 13, np.uint8))
    pseudo = spec.with_labels(str(pl), label_suffix="_leftImg8bit.png")
    got = labels_of(pseudo)
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
    save_palette(str(tmp_path / "labels" / "00009.png"), np.zeros((H, W), np.uint8))
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
    save_palette(str(tmp_path / "labels" / "00002.png"), np.full((H + 2, W + 4), 7, np.uint8))
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


# ---------------------------------------------------------------- NTHU Cross-City as it ships
@pytest.mark.parametrize("list_ext", [False, True])
def test_crosscity_jpg_images_and_the_nthu_list_place(tmp_path, list_ext):
    # was: only *.png under Images/{Train,Test} and lists only in NTHU_Datasets/<City>/List/
    root = tmp_path / "NTHU_Datasets"
    raws = make_crosscity(
        str(root), "Rio", n_train=3, n_test=3, train_ext=".jpg", test_exts=(".png", ".jpg"),
        lists="nthu", list_ext=list_ext,
    )  # fmt: skip
    assert (tmp_path / "NTHU_list" / "Rio" / "List" / "train.txt").is_file()
    save_jpg(str(root / "Rio" / "Images" / "Train" / "unlisted.jpg"), rgb(9))  # the list selects
    train = kd.crosscity(str(root), "Rio", "train")
    images, labels = train.list_files()
    assert labels is None
    assert [os.path.basename(p) for p in images] == [f"pano_{i:05d}_0_0.jpg" for i in range(3)]
    test = kd.crosscity(str(root), "Rio", "test")
    images, labels = test.list_files()
    assert [os.path.basename(p) for p in images] == [
        "pano_00000_1_180.png", "pano_00001_1_180.jpg", "pano_00002_1_180.png"
    ]  # fmt: skip
    assert [os.path.relpath(p, str(root)) for p in labels] == [
        os.path.join("Rio", "Labels", "Test", f"{stem}_eval.png") for stem in sorted(raws)
    ]
    for stem, lbl in zip(sorted(raws), labels_of(test), strict=True):
        np.testing.assert_array_equal(lbl, _dense(EXPECTED_CS19)[raws[stem]])
    x = next(iter(kd.make_inference_dataset(train, 1, size=None)))[0].numpy()[0]
    first = train.list_files()[0][0]
    pil = np.asarray(Image.open(first).convert("RGB"), np.float32)  # an independent JPEG decoder
    assert x.shape == (H, W, 3) and np.abs(x - pil).max() <= 8 and np.abs(x - pil).mean() < 2


def test_crosscity_jpg_folder_without_lists(tmp_path):
    make_crosscity(str(tmp_path), "Tokyo", n_train=2, n_test=2, train_ext=".jpg", test_exts=(".jpg", ".png"))
    images, _ = kd.crosscity(str(tmp_path), "Tokyo", "train").list_files()
    assert [os.path.basename(p) for p in images] == ["pano_00000_0_0.jpg", "pano_00001_0_0.jpg"]
    images, labels = kd.crosscity(str(tmp_path), "Tokyo", "test").list_files()
    assert [os.path.basename(p) for p in images] == ["pano_00000_1_180.jpg", "pano_00001_1_180.png"]
    assert all(p.endswith("_eval.png") for p in labels)


def test_image_size_reads_png_and_jpeg_headers_only(tmp_path):
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(rgb(0, 5, 7)).save(png)
    Image.fromarray(rgb(0, 96, 192)).save(jpg)
    assert kd.datasets.image_size(str(png)) == (5, 7)
    assert kd.datasets.image_size(str(jpg)) == (96, 192)
    data = jpg.read_bytes()
    jpg.write_bytes(data[: data.index(b"\xff\xda") + 40])  # pixel data cut: the header gives the size
    assert kd.datasets.image_size(str(jpg)) == (96, 192)
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    assert kd.datasets.image_size(str(tmp_path / "c.jpg")) is None
    assert kd.datasets.image_size(str(tmp_path / "missing.png")) is None
