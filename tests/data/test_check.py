"""The dataset check on fabricated trees in the real layouts: clean trees pass with the right counts
and ignored share; each kind of problem is found and names its path."""

import os

import numpy as np
import pytest

from keras_fada import data as kd
from keras_fada.data import check
from tests.support.data_trees import (
    make_cityscapes,
    make_crosscity,
    make_gta5,
    make_synthia,
    rgb,
    save_palette,
    save_png,
)

CS_IDS = (*range(0, 34), 255)  # Cityscapes label ids (and the license plate's 255)
CS19 = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
SYNTHIA16 = (3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11)


def _ignored(raws, mapped_values):
    allv = np.concatenate([np.ravel(r) for r in raws])
    return float(np.mean(~np.isin(allv, mapped_values)))


def test_clean_trees_in_every_layout(tmp_path):
    gta = make_gta5(str(tmp_path / "gta5"), n=3, values=CS_IDS)
    syn = make_synthia(str(tmp_path / "synthia"), n=2, values=range(23))
    cs = make_cityscapes(str(tmp_path / "cs"), "val", values=range(0, 34))
    cc = make_crosscity(str(tmp_path / "cc"), "Rio", train_ext=".jpg", test_exts=(".jpg", ".png"))
    specs = {
        "source_train": kd.gta5(str(tmp_path / "gta5")),
        "synthia": kd.synthia(str(tmp_path / "synthia")),
        "target_val": kd.cityscapes(str(tmp_path / "cs"), "val"),
        "target_train": kd.crosscity(str(tmp_path / "cc"), "Rio", "train"),
        "cc_test": kd.crosscity(str(tmp_path / "cc"), "Rio", "test"),
    }
    reports = {r.split: r for r in check.check_specs(specs)}
    assert all(r.clean for r in reports.values()), check.format_reports(reports.values())
    counts = {k: (r.images, r.labels) for k, r in reports.items()}
    assert counts == {
        "source_train": (3, 3), "synthia": (2, 2), "target_val": (4, 4), "target_train": (3, None),
        "cc_test": (2, 2),
    }  # fmt: skip
    assert reports["synthia"].decoding == "16-bit PNG, class id in channel 0"
    assert reports["source_train"].ignored_share == pytest.approx(_ignored(gta, CS19))
    assert reports["synthia"].ignored_share == pytest.approx(_ignored(syn, SYNTHIA16))
    assert reports["target_val"].ignored_share == pytest.approx(_ignored(list(cs.values()), CS19))
    assert reports["cc_test"].ignored_share == pytest.approx(_ignored(list(cc.values()), CS19))
    table = check.format_reports(reports.values())
    assert "no problems found" in table and "target_train" in table


def _problems(spec):
    report = check.check_split("x", spec)
    return report, "\n".join(report.problems)


def test_unpaired_mismatched_truncated_and_out_of_map_gta5(tmp_path):
    root = tmp_path / "gta5"
    make_gta5(str(root), n=6)  # values 34-39 are no Cityscapes label ids
    os.remove(root / "labels" / "00002.png")  # image without label
    save_palette(str(root / "labels" / "00009.png"), np.zeros((8, 12), np.uint8))  # label without image
    save_palette(str(root / "labels" / "00003.png"), np.full((5, 7), 7, np.uint8))  # size mismatch
    img = root / "images" / "00004.png"
    img.write_bytes(img.read_bytes()[:-30])  # truncated image
    lbl = root / "labels" / "00005.png"
    lbl.write_bytes(lbl.read_bytes()[:70])  # truncated label
    (root / "images" / "00006.png").write_bytes(b"garbage")  # unreadable image
    report, text = _problems(kd.gta5(str(root)))
    assert report.images == 6 and report.labels == 5
    assert f"image {str(root / 'images' / '00002.png')!r} has no label" in text
    assert f"label {str(root / 'labels' / '00009.png')!r} has no image" in text
    notes = "\n".join(report.notes)  # a size mismatch is a note: training resizes both (official)
    assert f"{str(root / 'images' / '00003.png')!r} is 8x12 but its label" in notes and "is 5x7" in notes
    assert "00003" not in text
    assert f"image {str(img)!r} is truncated" in text
    assert str(lbl) in text and "unreadable or truncated" in text
    assert f"image {str(root / 'images' / '00006.png')!r} is unreadable" in text
    assert "raw label value 34 (" in text and "0-33, 255" in text and "raw label value 39" in text
    assert "raw label value 33 " not in text and "raw label value 255 " not in text
    assert not report.clean


def test_synthia_8bit_labels_and_out_of_range_class_ids(tmp_path):
    root = tmp_path / "synthia"
    make_synthia(str(root), n=2)  # channel 0 holds 300 and 65535 besides the class ids 0-22
    eight = root / "RAND_CITYSCAPES" / "GT" / "LABELS" / "0000001.png"
    save_png(str(eight), np.full((8, 12, 3), 3, np.uint8))  # an 8-bit re-save
    report, text = _problems(kd.synthia(str(root)))
    assert f"label {str(eight)!r} is a 8-bit PNG" in text and "16-bit" in text
    assert "raw label value 300 " in text and "raw label value 65535 " in text
    assert "raw label value 22 " not in text  # decoded from channel 0, 16-bit: class ids are fine


def test_crosscity_truncated_jpeg_and_missing_list_entry(tmp_path):
    root = tmp_path / "NTHU_Datasets"
    make_crosscity(str(root), "Rio", n_train=2, n_test=2, train_ext=".jpg", lists="nthu")
    jpg = root / "Rio" / "Images" / "Train" / "pano_00001_0_0.jpg"
    jpg.write_bytes(jpg.read_bytes()[:-20])
    with open(tmp_path / "NTHU_list" / "Rio" / "List" / "train.txt", "a") as f:
        f.write("pano_00077_0_0\n")
    report, text = _problems(kd.crosscity(str(root), "Rio", "train"))
    assert report.images == 2
    assert f"image {str(jpg)!r} is truncated" in text
    assert "pano_00077_0_0.jpg" in text and "train.txt" in text and "does not exist" in text


def test_missing_split_and_precheck(tmp_path):
    make_cityscapes(str(tmp_path), "train")
    specs = {"target_train": kd.cityscapes(str(tmp_path), "train", labelled=False),
             "target_val": kd.cityscapes(str(tmp_path), "val")}  # fmt: skip
    report = check.check_split("target_val", specs["target_val"])
    assert report.images == 0 and "leftImg8bit/val" in report.problems[0]
    assert check.precheck(specs, ["target_train"]) == {"target_train": 4}
    with pytest.raises(kd.DatasetError, match="leftImg8bit/val"):
        check.precheck(specs)
    save_png(str(tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_000000_000001_leftImg8bit.png"), rgb(0))
    os.makedirs(tmp_path / "gtFine" / "val" / "bonn")
    with pytest.raises(kd.DatasetError, match="bonn_000000_000001_leftImg8bit.png' has no label"):
        check.precheck(specs)
