"""A real task never trains from random weights by accident: a stage that starts its network from ImageNet
weights refuses to start without them, naming the file to get and the option that takes it."""

import os

import pytest

from keras_fada import config as C
from keras_fada.training import RunError
from keras_fada.training.run_dir import check_pretrained
from tests.support.cli import assert_user_error, run


@pytest.mark.parametrize(
    "backbone, weights", [("resnet101", "resnet101-5d3b4d8f.pth"), ("vgg16", "vgg16-00b39a1b.pth")]
)
def test_train_without_imagenet_weights_is_one_line_and_leaves_nothing(tmp_path, backbone, weights):
    out = tmp_path / "run"
    code, text, _ = run(
        "train",
        "--task",
        "gta2cs",
        "--backbone",
        backbone,
        "--data-root",
        tmp_path / "no-data",
        "--output",
        out,
    )
    assert_user_error(code, text, "stage source", weights, "--pretrained PATH", "pretrained=scratch")
    assert not out.exists()


def test_a_missing_weights_file_is_named(tmp_path):
    code, text, _ = run(
        "train", "--task", "synthia2cs", "--pretrained", tmp_path / "r101.pth", "--output", tmp_path / "r"
    )
    assert_user_error(code, text, "r101.pth", "do not exist", "resnet101-5d3b4d8f.pth")


def test_which_stages_need_weights():
    cfg = C.load_config("gta2cs")
    with pytest.raises(RunError, match="stage distill"):
        check_pretrained(cfg, ["adapt", "distill"])  # the student starts fresh, as official
    assert check_pretrained(cfg, ["adapt"]) is None  # starts from the source-only model
    init = C.load_config("gta2cs", overrides=["distill.init=teacher"])
    assert check_pretrained(init, ["distill"]) is None
    assert check_pretrained(C.load_config("synthetic"), ["source", "distill"]) is None  # no ImageNet weights
    assert check_pretrained(C.load_config("gta2cs", "small"), ["source"]) is None


def test_training_from_scratch_is_a_choice_said_once():
    cfg = C.load_config("gta2cs", overrides=["pretrained=scratch"])
    note = check_pretrained(cfg, ["source", "adapt", "distill"])
    assert note == "training resnet101 from random weights in stage(s) source, distill (pretrained=scratch)"


def test_given_weights_pass_the_check(tmp_path):
    weights = tmp_path / "resnet101-5d3b4d8f.pth"
    weights.write_bytes(b"")
    cfg = C.load_config("gta2cs", overrides=[f"pretrained={weights}"])
    assert check_pretrained(cfg, ["source"]) is None and os.path.isfile(cfg["pretrained"])
