"""The task registry: every task and backbone is complete, and each task reports the means the paper
reports, over the right classes and under the right names (checked against NumPy)."""

import os

import numpy as np
import pytest

from keras_fada import config as C
from keras_fada.data import labels as L
from keras_fada.training import tasks


def _confusion(k, seed=0):
    return np.random.default_rng(seed).integers(0, 50, (k, k)) + np.eye(k, dtype=int) * 200


def _iou(conf):
    tp = np.diag(conf).astype(float)
    return tp / (conf.sum(0) + conf.sum(1) - tp + 1e-10) * 100


def test_every_task_has_its_values_file_and_every_backbone_a_builder():
    from keras_fada.training.build import BUILDERS

    for task in tasks.TASKS.values():
        assert os.path.isfile(C.task_file(task.name)), task.name
        assert C.load_config(task.name)["num_classes"] in task.num_classes
    assert set(BUILDERS) == set(C.backbones())


@pytest.mark.parametrize(
    "task, k, shown, extra",
    [
        ("gta2cs", 19, list(range(19)), {}),
        ("synthia2cs", 16, list(range(16)), {"miou13": list(L.CLASSES_13_IDS_16)}),
        ("cs2rome", 19, list(L.CLASSES_13_TRAIN_IDS_19), {}),
        ("cs2taipei", 13, list(range(13)), {}),
    ],
)
def test_reported_scores_match_numpy(task, k, shown, extra):
    conf = _confusion(k)
    iou = _iou(conf)
    scores = tasks.reported_scores(task, conf)
    names = {19: L.CITYSCAPES_19_CLASSES, 16: L.SYNTHIA_16_CLASSES, 13: L.CROSSCITY_13_CLASSES}[k]
    assert list(scores["iou"]) == [names[i] for i in shown]
    np.testing.assert_allclose(list(scores["iou"].values()), iou[shown], atol=0.006)
    np.testing.assert_allclose(scores["miou"], iou[shown].mean(), atol=0.006)
    for key, ids in extra.items():
        np.testing.assert_allclose(scores[key], iou[ids].mean(), atol=0.006)
    assert scores["num_classes_reported"] == len(shown)


def test_thirteen_classes_carry_their_own_names():
    # was: the first 13 SYNTHIA names, so from index 3 on each name carried another class's IoU
    names = tasks.TASKS["cs2rio"].class_names(13)
    assert names == tuple(L.CITYSCAPES_19_CLASSES[i] for i in L.CLASSES_13_TRAIN_IDS_19)
    assert names[3] == "traffic light"


def test_task_specs_point_at_the_task_datasets(tmp_path):
    cfg = C.load_config("cs2tokyo", overrides=[f"data.root={tmp_path}"])
    specs = tasks.task_specs(cfg)
    assert specs["source_train"].root == str(tmp_path / "cityscapes")
    assert specs["target_train"].image_dir == "Tokyo/Images/Train"
    assert specs["target_val"].label_dir == "Tokyo/Labels/Test"
    cfg = C.load_config("synthia2cs", overrides=[f"data.root={tmp_path}"])
    specs = tasks.task_specs(cfg)
    assert specs["source_train"].label_format == "png16_ch0"
    assert specs["target_val"].class_names == L.SYNTHIA_16_CLASSES
