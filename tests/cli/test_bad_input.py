"""The user mistakes of issue 21 through the CLI: each gives one ``Error:`` line naming the key, file
or value and what was expected, exit code 2, before any long work, and leaves nothing that blocks
the corrected command."""

import json

import pytest

from keras_fada import config as C
from keras_fada.training import tasks
from tests.support import crash_runs as cr
from tests.support.cli import TINY, assert_user_error, run


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tasks.task_specs(C.load_config("synthetic", overrides=[*TINY, f"data.root={root}"]))  # generated once
    return root


def assert_error_while_training(code, text, *fragments):
    """Exit 2 and one ``Error:`` line, after at most the stage's header line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in text, text
    assert [line.startswith("Error:") for line in lines].count(True) == 1, text
    assert all(line.startswith(("Error:", "[source]")) for line in lines), text
    for f in fragments:
        assert f in text, text


def train(data_root, out, *extra):
    return run("train", "--task", "synthetic", "--stage", "source", "--data-root", data_root, "--output", out,
               "--quiet", *TINY, *extra)  # fmt: skip


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("source.steps=0", ["'source.steps' is 0", "an integer >= 1"]),
        ("source.steps=ten", ["'source.steps' is 'ten'", "an integer"]),
        ("adapt.batch_size=-4", ["'adapt.batch_size' is -4", ">= 1"]),
        ("data.source_size=[32]", ["'data.source_size' is [32]", "a list of 2 integers"]),
        ("lambda_adv=high", ["'lambda_adv' is 'high'", "a number >= 0"]),
        ("distill.flip_prob=1.5", ["'distill.flip_prob' is 1.5", "in [0, 1]"]),
        ("source.jitter=maybe", ["'source.jitter' is 'maybe'", "true or false"]),
        ("eval.scales=[0.5,0]", ["'eval.scales'", "numbers > 0"]),
        ("keep_snapshots=-3", ["'keep_snapshots' is -3"]),
    ],
)
def test_wrong_type_or_range_is_one_line_before_any_work(tmp_path, override, fragments):
    out = tmp_path / "run"
    code, text, _ = run("train", "--task", "synthetic", "--output", out, override)
    assert_user_error(code, text, *fragments)
    assert not out.exists()


def test_output_that_is_a_file_or_below_a_file(data_root, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    code, text, _ = train(data_root, a_file)
    assert_user_error(code, text, "is a file", "expected a directory")
    code, text, _ = train(data_root, a_file / "run")
    assert_user_error(code, text, "cannot be written", "is a file, not a directory")
    assert a_file.read_text() == "not a folder"


def test_full_disk_during_a_backup_is_one_line(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FADA_FAULT", "enospc:1")  # the first backup's write fails with ENOSPC
    code, text, _ = train(data_root, tmp_path / "run")
    assert_error_while_training(code, text, "No space left on device", "ckpt-000000001")
    monkeypatch.delenv("KERAS_FADA_FAULT")
    code, text, res = train(data_root, tmp_path / "run")  # nothing trained: the rerun is not refused
    assert code == 0, text + repr(res.exception)


def test_a_failed_start_does_not_block_the_rerun(data_root, tmp_path):
    out = tmp_path / "run"
    code, text, _ = train(data_root, out, f"data.lists.source_train={tmp_path / 'missing.txt'}")
    assert_user_error(code, text, "data.lists.source_train", "missing.txt")
    (out / "source").mkdir(parents=True)  # what an older attempt may leave: a stage folder, no backup
    (out / "source" / "config.yaml").write_text("seed: 0\n")
    code, text, res = train(data_root, out)
    assert code == 0, text + repr(res.exception)


def test_corrupt_image_met_while_training_is_one_line_and_the_stage_resumes(data_root, tmp_path):
    images = sorted((data_root / "synthetic").rglob("source/images/*.png"))
    victim = images[len(images) // 2]
    original = victim.read_bytes()
    victim.write_text("this is not a PNG")
    out = tmp_path / "run"
    try:
        code, text, _ = train(data_root, out, "source.steps=8")  # 16 draws of 12 images: all are read
        assert_error_while_training(code, text, victim.name, "--resume")
    finally:
        victim.write_bytes(original)
    code, text, res = train(data_root, out, "--resume", "source.steps=8")
    assert code == 0, text + repr(res.exception)
    assert json.loads((out / "source" / "metrics.json").read_text())["steps"] == 8


def test_plain_value_error_of_a_dataset_builder_is_one_line(data_root, tmp_path, monkeypatch):
    def broken(cfg):
        raise ValueError("synthia: 13 classes are not a class set of this dataset")

    monkeypatch.setattr(tasks, "_task_specs", broken)
    code, text, _ = train(data_root, tmp_path / "run")
    assert_user_error(code, text, "task 'synthetic'", "13 classes")


@pytest.mark.parametrize("scales", ["0,1", "-0.5", "1,,2", ""])
def test_evaluate_scales_must_be_positive_numbers(tmp_path, scales):
    ckpt = cr.initial_checkpoint(tmp_path / "s.weights.h5")
    code, text, _ = run("evaluate", "--task", "synthetic", "--checkpoint", ckpt, "--data-root", tmp_path,
                        "--scales", scales)  # fmt: skip
    assert_user_error(code, text, "--scales", "> 0")


def test_convert_of_a_text_file_is_one_line(tmp_path):
    src = tmp_path / "notes.pth"
    src.write_text("hello\n")
    code, text, _ = run("convert", src, tmp_path / "out")
    assert_user_error(code, text, "notes.pth", "expected an official FADA checkpoint")
