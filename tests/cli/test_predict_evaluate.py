"""evaluate, ccd and predict beyond the synthetic task: a 13-class Cross-City checkpoint, the progress
bar and --quiet, and predict's Cityscapes label-id output for the official evaluator."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.support import data_trees as T
from tests.support.cli import run

# cityscapesscripts.helpers.labels: name -> (label id, colour), the classes a network predicts
OFFICIAL = {
    "road": (7, (128, 64, 128)), "sidewalk": (8, (244, 35, 232)), "building": (11, (70, 70, 70)),
    "wall": (12, (102, 102, 156)), "fence": (13, (190, 153, 153)), "pole": (17, (153, 153, 153)),
    "traffic light": (19, (250, 170, 30)), "traffic sign": (20, (220, 220, 0)),
    "vegetation": (21, (107, 142, 35)), "terrain": (22, (152, 251, 152)), "sky": (23, (70, 130, 180)),
    "person": (24, (220, 20, 60)), "rider": (25, (255, 0, 0)), "car": (26, (0, 0, 142)),
    "truck": (27, (0, 0, 70)), "bus": (28, (0, 60, 100)), "train": (31, (0, 80, 100)),
    "motorcycle": (32, (0, 0, 230)), "bicycle": (33, (119, 11, 32)),
}  # fmt: skip
# the official class order of each class count (train ids 0..K-1)
CLASSES = {
    19: list(OFFICIAL),
    16: [n for n in OFFICIAL if n not in ("terrain", "truck", "train")],
    13: [n for n in OFFICIAL if n not in ("wall", "fence", "pole", "terrain", "truck", "train")],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Cityscapes train + NTHU Rome under a data root, and small-network checkpoints of 19/16/13 classes."""
    from keras_fada.training.build import build_segmentor

    root = tmp_path_factory.mktemp("cli_pe")
    data = root / "data"
    T.make_cityscapes(str(data / "cityscapes"))
    T.make_crosscity(str(data / "NTHU_Datasets"), "Rome", n_test=3)
    ckpts = {}
    for k in (19, 16, 13):
        ckpts[k] = root / f"seg{k}.weights.h5"
        build_segmentor("small", k).save_weights(str(ckpts[k]))
    return root, data, ckpts


def _bar_shown(text):
    return "images/s" in text and "/image" in text


def test_evaluate_cs2rome_with_13_classes_and_its_progress_bar(world):
    # was: a raw ValueError traceback (issue 20, item 4)
    root, data, ckpts = world
    common = ("evaluate", "--task", "cs2rome", "--backbone", "small", "--checkpoint", ckpts[13],
              "--data-root", data, "--size", "16x32")  # fmt: skip
    code, text, res = run(*common, "--output", root / "e13.json", "num_classes=13")
    assert code == 0 and "Traceback" not in text, text + repr(res.exception)
    scores = json.loads((root / "e13.json").read_text())
    assert list(scores["iou"]) == CLASSES[13]
    assert scores["miou"] == pytest.approx(np.mean(list(scores["iou"].values())), abs=0.01)
    assert _bar_shown(text) and "3/3" in text
    code, text, _ = run(*common, "--output", root / "q.json", "--quiet", "--multiscale", "--flip",
                        "num_classes=13")  # fmt: skip
    assert code == 0 and not _bar_shown(text), text
    assert json.loads((root / "q.json").read_text())["scale_resize"] == "official"


def test_ccd_progress_bar_and_quiet(world):
    root, data, ckpts = world
    common = ("ccd", "--task", "cs2rome", "--backbone", "small", "--checkpoint", ckpts[19],
              "--data-root", data, "--num-images", 2, "--output", root / "ccd")  # fmt: skip
    code, text, res = run(*common)
    assert code == 0, text + repr(res.exception)
    assert _bar_shown(text) and "4/4" in text  # 2 source + 2 target images
    code, text, _ = run(*common, "--quiet")
    assert code == 0 and not _bar_shown(text), text


@pytest.mark.parametrize("k", [19, 16, 13])
def test_predict_writes_cityscapes_label_ids_and_colours(world, k, tmp_path):
    root, data, ckpts = world
    images = sorted((data / "NTHU_Datasets" / "Rome" / "Images" / "Test").glob("*.png"))[:2]
    code, text, res = run("predict", "--checkpoint", ckpts[k], "--backbone", "small", "--num-classes", k,
                          "--output", tmp_path, *images)  # fmt: skip
    assert code == 0, text + repr(res.exception)
    assert _bar_shown(text) and "2/2" in text
    label_id = np.array([OFFICIAL[n][0] for n in CLASSES[k]])
    colour = np.array([OFFICIAL[n][1] for n in CLASSES[k]])
    for img in images:
        train_ids = np.asarray(Image.open(tmp_path / f"{img.stem}_labels.png"))
        assert train_ids.max() < k
        ids = Image.open(tmp_path / "labelIds" / f"{img.stem}_labelIds.png")
        assert ids.mode == "L"
        np.testing.assert_array_equal(np.asarray(ids), label_id[train_ids])
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / f"{img.stem}_color.png")), colour[train_ids]
        )
    # cityscapesscripts matches <city>_<seq>_<frame>*.png below CITYSCAPES_RESULTS: one file per image
    assert sorted(p.name for p in (tmp_path / "labelIds").iterdir()) == [
        f"{i.stem}_labelIds.png" for i in images
    ]
    code, text, _ = run("predict", "--checkpoint", ckpts[k], "--backbone", "small", "--num-classes", k,
                        "--output", tmp_path / "q", "--quiet", images[0])  # fmt: skip
    assert code == 0 and not _bar_shown(text), text
