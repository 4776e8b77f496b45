"""The ``keras-fada`` command line on the synthetic task at tiny sizes (click's CliRunner)."""

import json
import os

import pytest

from keras_fada import config as C
from tests.support.cli import TINY, assert_user_error, run


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "all"
    code, text, result = run(
        "train", "--task", "synthetic", "--data-root", data_root, "--output", out, "--quiet", *TINY
    )
    assert code == 0, text + repr(result.exception)
    return out, text


# ------------------------------------------------------------------------------------------ train
def test_train_all_writes_a_complete_run(full_run):
    out, text = full_run
    for stage in ("source", "adapt", "distill"):
        assert f"[{stage}] target mIoU" in text
        assert json.loads((out / stage / "metrics.json").read_text())["checkpoint_choice"] == "last step 2"
        assert (out / stage / "segmentor.weights.h5").is_file()
        assert (out / stage / "config.yaml").is_file()
        assert any((out / stage / "logs").rglob("events.out.tfevents*"))
        assert list((out / stage / "backup").glob("ckpt-*/state.json"))
    assert len(os.listdir(out / "distill" / "pseudo_labels")) == 4
    for stage in ("source", "adapt", "distill"):  # D beside the segmentor, adaptation only
        kept = sorted(p.name.split("_")[0] for p in (out / stage / "snapshots").iterdir())
        assert kept == (["discriminator"] * 2 if stage == "adapt" else []) + ["segmentor"] * 2
        assert (out / stage / "discriminator.weights.h5").is_file() == (stage == "adapt")
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["stages"]) == {"source", "adapt", "distill"}
    assert set(summary["gain_over_source_only"]) == {"adapt", "distill"}
    assert text.count("(checkpoint: last step 2)") == 3  # each stage's mIoU says which weights
    assert summary["stages"]["adapt"]["checkpoint_choice"] == "last step 2"
    cfg = C.read_yaml(out / "config.yaml")
    assert cfg["task"] == "synthetic" and cfg["backbone"] == "small" and cfg["source"]["steps"] == 2
    assert "vs source-only" in text


def test_train_each_stage_separately(data_root, tmp_path):
    out = tmp_path / "run"
    common = ("--task", "synthetic", "--data-root", data_root, "--output", out, "--quiet", *TINY)
    code, text, _ = run("train", "--stage", "adapt", *common)
    assert_user_error(code, text, "source-only checkpoint")
    for stage in ("source", "adapt", "distill"):
        code, text, res = run("train", "--stage", stage, *common)
        assert code == 0, text + repr(res.exception)
        state = json.loads((out / stage / "metrics.json").read_text())
        assert state["finished"] and state["steps"] == 2
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["stages"]) == {"source", "adapt", "distill"}


def test_finished_run_is_not_overwritten_and_resume_continues(data_root, tmp_path):
    out = tmp_path / "run"
    common = (
        "--task",
        "synthetic",
        "--stage",
        "source",
        "--data-root",
        data_root,
        "--output",
        out,
        "--quiet",
    )
    code, text, res = run("train", *common, *TINY)
    assert code == 0, text + repr(res.exception)
    code, text, _ = run("train", *common, *TINY)
    assert_user_error(code, text, "already holds a run", "--resume")
    # "interrupted" after 2 steps: continue to 4 from the backup at step 2
    code, text, res = run("train", *common, "--resume", "source.steps=4")
    assert code == 0, text + repr(res.exception)
    assert "resuming at step 2" in text
    state = json.loads((out / "source" / "metrics.json").read_text())
    assert state["steps"] == 4
    assert C.read_yaml(out / "config.yaml")["source"]["steps"] == 4
    code, text, _ = run("train", *common, "--resume")
    assert code == 0 and "already finished" in text


# ------------------------------------------------------------------------------------------ evaluate / ccd / predict
def test_evaluate_single_and_multiscale(full_run, data_root, tmp_path):
    out, _ = full_run
    ckpt = out / "adapt" / "segmentor.weights.h5"
    report = tmp_path / "single.json"
    code, text, res = run("evaluate", "--task", "synthetic", "--checkpoint", ckpt, "--data-root", data_root,
                          "--output", report)  # fmt: skip
    assert code == 0, text + repr(res.exception)
    single = json.loads(report.read_text())
    assert len(single["iou"]) == 19 and "mIoU" in text and single["scales"] == [1.0]
    assert "(19 classes; checkpoint: last step 2)" in text and single["checkpoint_choice"] == "last step 2"
    summary = json.loads((out / "metrics.json").read_text())
    assert single["miou"] == pytest.approx(summary["stages"]["adapt"]["miou"], abs=0.01)
    report = tmp_path / "ms.json"
    code, text, res = run("evaluate", "--task", "synthetic", "--checkpoint", ckpt, "--data-root", data_root,
                          "--multiscale", "--flip", "--output", report)  # fmt: skip
    assert code == 0, text + repr(res.exception)
    ms = json.loads(report.read_text())
    assert ms["scales"] == [0.7, 1.0, 1.3] and ms["flip"] is True
    assert 0.0 <= ms["miou"] <= 100.0


def _ccd(data_root, output, *args):
    """``keras-fada ccd`` on 4 images per domain; its models from the JSON."""
    code, text, res = run("ccd", "--task", "synthetic", "--data-root", data_root, "--num-images", 4,
                          "--quiet", "--output", output, *args)  # fmt: skip
    assert code == 0, text + repr(res.exception)
    return json.loads(output.with_suffix(".json").read_text())["models"], text


def test_ccd_of_two_checkpoints_equals_each_alone(full_run, data_root, tmp_path):
    out, _ = full_run
    source, adapt = (out / s / "segmentor.weights.h5" for s in ("source", "adapt"))
    both, text = _ccd(data_root, tmp_path / "both", "--checkpoint", f"src={source}", "--checkpoint", adapt)
    assert list(both) == ["src", "adapt"]  # a given label, the default: the stage
    assert ["class", "src", "adapt"] in [line.split() for line in text.splitlines()]  # the table's header
    for label, path in (("src", source), ("adapt", adapt)):
        (alone,) = _ccd(data_root, tmp_path / label, "--checkpoint", path)[0].values()
        assert len(alone["ccd"]) == 19 and alone["ccd"] == pytest.approx(both[label]["ccd"], abs=1e-4)
        assert alone["checkpoint_choice"] == "last step 2"
    from PIL import Image

    assert Image.open(tmp_path / "both.png").size[0] > 0
    stages, _ = _ccd(data_root, tmp_path / "run", "--run", out)  # every finished stage
    assert list(stages) == ["source", "adapt", "distill"]
    assert stages["adapt"]["ccd"] == pytest.approx(both["adapt"]["ccd"], abs=1e-4)


def test_ccd_without_matplotlib_writes_the_table_and_json(full_run, data_root, tmp_path, monkeypatch):
    import sys

    for name in [n for n in sys.modules if n.partition(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` fails
    models, text = _ccd(
        data_root, tmp_path / "c", "--checkpoint", full_run[0] / "adapt" / "segmentor.weights.h5"
    )
    assert "note: install keras-fada[plots] to draw the chart" in text and "Traceback" not in text
    assert len(models["adapt"]["ccd"]) == 19 and not (tmp_path / "c.png").exists()


def test_ccd_mistakes_are_one_line(tmp_path):
    code, text, _ = run("ccd", "--task", "synthetic")
    assert_user_error(code, text, "--checkpoint [LABEL=]PATH", "--run DIR")
    a, b = (f"a={tmp_path / name}.weights.h5" for name in "xy")
    code, text, _ = run("ccd", "--task", "synthetic", "--checkpoint", a, "--checkpoint", b)
    assert_user_error(code, text, "two checkpoints are labelled 'a'")
    code, text, _ = run("ccd", "--task", "synthetic", "--run", tmp_path)
    assert_user_error(code, text, "holds no finished stage")


def test_predict_writes_colour_and_overlay(full_run, data_root, tmp_path):
    out, _ = full_run
    images = sorted((data_root / "synthetic" / "target" / "leftImg8bit" / "val").rglob("*.png"))
    code, text, res = run("predict", "--checkpoint", out / "distill" / "segmentor.weights.h5",
                          "--output", tmp_path / "pred", *images)  # fmt: skip
    assert code == 0, text + repr(res.exception)
    from PIL import Image

    for img in images:
        stem = img.stem
        colour = Image.open(tmp_path / "pred" / f"{stem}_color.png")
        assert colour.size == Image.open(img).size
        assert (tmp_path / "pred" / f"{stem}_overlay.png").is_file()
        assert Image.open(tmp_path / "pred" / f"{stem}_labels.png").mode == "P"


# ------------------------------------------------------------------------------------------ errors
def test_unknown_task_lists_tasks():
    code, text, _ = run("train", "--task", "gta2mars")
    assert code == 2 and "Traceback" not in text
    assert "gta2cs" in text and "synthetic" in text


def test_missing_data_root_names_the_layout(tmp_path):
    code, text, _ = run("train", "--task", "gta2cs", "--stage", "source", "--data-root", tmp_path / "nope",
                        "--output", tmp_path / "run", "--quiet", "--pretrained", "scratch")  # fmt: skip
    assert_user_error(code, text, "images/NNNNN.png")


def test_bad_config_key_names_valid_keys(tmp_path):
    code, text, _ = run("train", "--task", "synthetic", "--output", tmp_path, "encoder.mood=binary")
    assert_user_error(code, text, "encoder.mood", "encoder.mode")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lambda_advv: 0.1\n")
    code, text, _ = run("train", "--task", "synthetic", "--output", tmp_path, "--config", bad)
    assert_user_error(code, text, "lambda_advv", "lambda_adv")


def test_missing_checkpoint(tmp_path):
    code, text, _ = run("evaluate", "--task", "synthetic", "--checkpoint", tmp_path / "x.weights.h5")
    assert_user_error(code, text, "does not exist")
    code, text, _ = run("predict", "--checkpoint", tmp_path / "x.weights.h5", "a.png")
    assert_user_error(code, text, "does not exist")


def test_checkpoint_of_another_class_count_or_backbone(full_run, tmp_path):
    out, _ = full_run
    ckpt = out / "source" / "segmentor.weights.h5"
    code, text, _ = run("evaluate", "--task", "synthia2cs", "--backbone", "small", "--checkpoint", ckpt,
                        "--data-root", tmp_path)  # fmt: skip
    assert_user_error(code, text, "predicts 19 classes", "expects 16")
    bare = tmp_path / "bare.weights.h5"  # weights without the .keras saved beside them
    bare.write_bytes(ckpt.read_bytes())
    code, text, _ = run("predict", "--checkpoint", bare, "--backbone", "vgg16", "x.png")
    assert_user_error(code, text, "vgg16")


def test_official_recipes_per_task():
    gta = C.load_config("gta2cs")
    assert gta["adapt"]["base_lr"] == 2.5e-4 and gta["adapt"]["steps"] == 40000
    assert gta["distill"]["freeze_bn"] is False and gta["distill"]["eval_size"] == [1024, 2048]
    assert C.load_config("synthia2cs")["distill"]["freeze_bn"] is True
    assert C.load_config("synthia2cs")["num_classes"] == 16


def test_bad_choice_value_names_valid_values(tmp_path):
    code, text, _ = run("train", "--task", "synthetic", "--output", tmp_path, "encoder.mode=sfot")
    assert_user_error(code, text, "encoder.mode", "'sfot'", "soft, hard, binary")
    code, text, _ = run("train", "--task", "synthetic", "--output", tmp_path, "precision=bf16")
    assert_user_error(code, text, "precision", "mixed_bfloat16")


def test_mixed_bfloat16_stage_computes_in_bf16_and_restores_the_policy(
    full_run, data_root, tmp_path, monkeypatch
):
    import keras

    from keras_fada.training import run_dir as R
    from keras_fada.training import stages
    from keras_fada.training.build import load_segmentor

    out, _ = full_run
    seen = []
    original = stages._run_stage

    def spy(cfg, stage, run_dir, verbose, evaluate_after):
        seen.append(keras.config.dtype_policy().name)
        result = original(cfg, stage, run_dir, verbose, evaluate_after)
        segmentor = load_segmentor(R.stage_checkpoint(run_dir, stage), "small", 19)
        seen.append((segmentor.compute_dtype, segmentor.variable_dtype))
        return result

    monkeypatch.setattr(stages, "_run_stage", spy)
    run_dir = tmp_path / "bf16"
    code, text, res = run(
        "train", "--task", "synthetic", "--stage", "adapt", "--data-root", data_root, "--output", run_dir,
        "--quiet", *TINY, "precision=mixed_bfloat16", f"adapt.init={out / 'source' / 'segmentor.weights.h5'}",
    )  # fmt: skip
    assert code == 0, text + repr(res.exception)
    assert seen == ["mixed_bfloat16", ("bfloat16", "float32")]
    assert keras.config.dtype_policy().name == "float32"
    state = json.loads((run_dir / "adapt" / "metrics.json").read_text())
    assert state["finished"] and 0.0 <= state["miou"] <= 100.0


def test_same_seed_same_weights_other_seed_other_weights(data_root, tmp_path):
    import numpy as np

    def trained(name, seed):
        out = tmp_path / name
        code, text, res = run(
            "train", "--task", "synthetic", "--stage", "source", "--data-root", data_root,
            "--output", out, "--quiet", *TINY, f"seed={seed}",
        )  # fmt: skip
        assert code == 0, text + repr(res.exception)
        from keras_fada.training.build import load_segmentor

        return load_segmentor(str(out / "source" / "segmentor.weights.h5"), "small", 19).get_weights()

    a, b, c = trained("a", 3), trained("b", 3), trained("c", 4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))
