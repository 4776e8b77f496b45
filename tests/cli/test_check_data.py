"""``keras-fada check-data`` and list files from the command line, on trees in the real layouts."""

import os

import pytest

from keras_fada import config as C
from keras_fada.training import tasks
from tests.cli.test_commands import assert_user_error, run
from tests.support.data_trees import make_cityscapes, make_crosscity, make_gta5

CS_IDS = (*range(0, 34), 255)


@pytest.fixture
def gta2cs_root(tmp_path):
    make_gta5(str(tmp_path / "gta5"), n=3, values=CS_IDS)
    make_cityscapes(str(tmp_path / "cityscapes"), "train", values=range(34))
    make_cityscapes(str(tmp_path / "cityscapes"), "val", values=range(34))
    return tmp_path


def _row(text, split):
    return next(line.split() for line in text.splitlines() if line.startswith(split))


def test_clean_gta2cs_tree(gta2cs_root):
    code, text, _ = run("check-data", "--task", "gta2cs", "--data-root", gta2cs_root, "--quiet")
    assert code == 0, text
    assert _row(text, "source_train")[:4] == ["source_train", "gta5", "3", "3"]
    assert _row(text, "target_train")[:4] == ["target_train", "cityscapes_train", "4", "-"]
    assert _row(text, "target_val")[:4] == ["target_val", "cityscapes_val", "4", "4"]
    assert "no problems found" in text


def test_problems_exit_2_and_name_their_paths(gta2cs_root):
    os.remove(gta2cs_root / "gta5" / "labels" / "00002.png")
    make_gta5(str(gta2cs_root / "bad"), n=1)  # values 34-39: outside the Cityscapes label ids
    os.replace(gta2cs_root / "bad" / "labels" / "00001.png", gta2cs_root / "gta5" / "labels" / "00001.png")
    code, text, _ = run("check-data", "--task", "gta2cs", "--data-root", gta2cs_root, "--quiet")
    assert code == 2, text
    assert str(gta2cs_root / "gta5" / "images" / "00002.png") in text and "has no label" in text
    assert "raw label value 3" in text and str(gta2cs_root / "gta5" / "labels" / "00001.png") in text
    assert "Traceback" not in text


def test_a_list_file_selects_exactly_its_subset(gta2cs_root, tmp_path_factory):
    sub = tmp_path_factory.mktemp("lists") / "val_subset.txt"
    sub.write_text("bonn/bonn_000001_000020_leftImg8bit.png\naachen/aachen_000000_000019\n")
    code, text, _ = run(
        "check-data", "--task", "gta2cs", "--data-root", gta2cs_root, "--quiet",
        f"data.lists.target_val={sub}",
    )  # fmt: skip
    assert code == 0, text
    assert _row(text, "target_val")[:4] == ["target_val", "cityscapes_val", "2", "2"]
    cfg = C.load_config("gta2cs", overrides=[f"data.root={gta2cs_root}", f"data.lists.target_val={sub}"])
    images, labels = tasks.task_specs(cfg)["target_val"].list_files()
    val = gta2cs_root / "cityscapes" / "leftImg8bit" / "val"
    assert images == [
        str(val / "bonn" / "bonn_000001_000020_leftImg8bit.png"),
        str(val / "aachen" / "aachen_000000_000019_leftImg8bit.png"),
    ]
    assert labels[0].endswith("bonn_000001_000020_gtFine_labelIds.png")


def test_a_missing_list_file_is_one_line(gta2cs_root):
    code, text, _ = run(
        "check-data", "--task", "gta2cs", "--data-root", gta2cs_root, "data.lists.source_train=nowhere.txt"
    )
    assert_user_error(code, text, "data.lists.source_train", "nowhere.txt")
    code, text, _ = run("check-data", "--task", "gta2cs", "data.lists.train=x.txt")
    assert_user_error(code, text, "data.lists.train")


def test_crosscity_jpg_with_nthu_lists(tmp_path):
    make_cityscapes(str(tmp_path / "cityscapes"), "train", values=range(34))
    make_crosscity(
        str(tmp_path / "NTHU_Datasets"), "Rio", n_train=3, n_test=2, train_ext=".jpg",
        test_exts=(".png", ".jpg"), lists="nthu",
    )  # fmt: skip
    code, text, _ = run("check-data", "--task", "cs2rio", "--data-root", tmp_path, "--quiet")
    assert code == 0, text
    assert _row(text, "target_train")[:4] == ["target_train", "crosscity_Rio_train", "3", "-"]
    assert _row(text, "target_val")[:4] == ["target_val", "crosscity_Rio_test", "2", "2"]


def test_train_names_a_missing_split_before_building_a_network(gta2cs_root):
    import shutil

    shutil.rmtree(gta2cs_root / "cityscapes" / "gtFine" / "val")
    out = gta2cs_root / "run"
    code, text, _ = run(
        "train",
        "--task",
        "gta2cs",
        "--data-root",
        gta2cs_root,
        "--output",
        out,
        "--quiet",
        "--pretrained",
        "scratch",
    )
    assert_user_error(code, text, "cityscapes_val", str(gta2cs_root / "cityscapes" / "gtFine" / "val"))
    assert not out.exists()
