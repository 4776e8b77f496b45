"""``keras-fada select`` on a tiny synthetic adaptation run, and ``evaluate --checkpoint selected``."""

import json
import shutil
import types

import pytest

from tests.support.cli import TINY, assert_user_error, run


@pytest.fixture(scope="module")
def adapt_run(tmp_path_factory):
    """A finished 2-step adaptation stage as ``train`` leaves it (config.yaml, a snapshot per step
    written by the stage's own SegmentorSnapshots with its discriminator, the final weights and
    trained.json), without the training: two small segmentors and discriminators of different seeds
    stand in for the two steps; a source stage holds the final weights only."""
    import keras

    from keras_fada import config as C
    from keras_fada.training.build import build_segmentor, discriminator
    from keras_fada.training.checkpoint import SegmentorSnapshots, save_weights_atomic
    from keras_fada.training.tasks import task_specs

    root = tmp_path_factory.mktemp("select")
    out = root / "run"
    (out / "adapt").mkdir(parents=True)
    cfg = C.load_config("synthetic", overrides=[*TINY, f"data.root={root / 'data'}", "keep_snapshots=-1"])
    task_specs(cfg)  # generates the synthetic pair
    C.dump(cfg, str(out / "config.yaml"))
    C.dump(cfg, str(out / "adapt" / "config.yaml"))
    for step in (1, 2):
        keras.utils.set_random_seed(step)
        segmentor = build_segmentor("small", 19)
        disc = discriminator(cfg, segmentor)
        snapshots = SegmentorSnapshots(segmentor, str(out / "adapt" / "snapshots"), 1, discriminator=disc)
        snapshots.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=step)))
        snapshots.on_epoch_end(step - 1)
    segmentor.save_weights(str(out / "adapt" / "segmentor.weights.h5"))
    save_weights_atomic(disc, str(out / "adapt" / "discriminator.weights.h5"))
    (out / "adapt" / "trained.json").write_text('{"steps": 2, "train_s": 0.1}')
    shutil.copytree(out / "adapt", out / "source", ignore=shutil.ignore_patterns("snapshots", "discrim*"))
    return root, out


def test_select_scores_every_snapshot_and_evaluate_uses_the_choice(adapt_run):
    root, out = adapt_run
    code, text, res = run("select", "--run", out, "--score", "snd", "--images", 3, "--pixels", 32)
    assert code == 0, text + repr(res.exception)
    sel = json.loads((out / "selection.json").read_text())
    assert [r["step"] for r in sel["rows"]] == [1, 2]
    assert sel["rows"][-1]["checkpoint"] == "adapt/segmentor.weights.h5"  # the final weights, last row
    best = max(sel["rows"], key=lambda r: (r["snd"], r["step"]))
    assert sel["chosen"]["step"] == best["step"] and sel["images"] == 3
    for name in ("last", "entropy", "infomax", "snd", "oracle"):
        assert name in sel["agreement"] and name in text
    oracle = max(r["miou"] for r in sel["rows"])
    assert sel["agreement"]["snd"]["gap"] == pytest.approx(oracle - best["miou"])
    assert f"chosen by snd: step {best['step']}" in text

    code, text, res = run("evaluate", "--task", "synthetic", "--checkpoint", "selected", "--run", out,
                          "--quiet", "--output", root / "e.json")  # fmt: skip
    assert code == 0, text + repr(res.exception)
    choice = f"selected by snd (label-free): step {best['step']}"
    assert f"checkpoint: {choice})" in text  # beside the mIoU
    scores = json.loads((root / "e.json").read_text())
    assert scores["checkpoint_choice"] == choice
    assert scores["checkpoint"].endswith(best["checkpoint"])
    assert scores["miou"] == pytest.approx(best["miou"], abs=0.01)


def test_the_discriminator_score_where_a_stage_has_one(adapt_run, tmp_path):
    root, out = adapt_run
    code, text, res = run("select", "--run", out, "--score", "discriminator", "--images", 3,
                          "--pixels", 8, "--output", tmp_path / "d.json")  # fmt: skip
    assert code == 0, text + repr(res.exception)
    sel = json.loads((tmp_path / "d.json").read_text())
    values = [r["discriminator"] for r in sel["rows"]]
    assert all(0.0 < v < 1.0 for v in values) and len(set(values)) == 2  # each step's own D
    best = max(sel["rows"], key=lambda r: (r["discriminator"], r["step"]))
    assert sel["chosen"]["step"] == best["step"] and "discriminator" in sel["agreement"]
    assert f"chosen by discriminator: step {best['step']}" in text

    code, text, res = run("select", "--run", out, "--stage", "source", "--images", 2, "--pixels", 8,
                          "--output", tmp_path / "s.json")  # fmt: skip
    assert code == 0, text + repr(res.exception)
    sel = json.loads((tmp_path / "s.json").read_text())
    assert [r["discriminator"] for r in sel["rows"]] == [None] and "discriminator" not in sel["agreement"]
    assert text.splitlines()[2].split()[-3] == "-"  # the table's discriminator column: absent

    code, text, _ = run("select", "--run", out, "--stage", "source", "--score", "discriminator")
    assert_user_error(code, text, "stage source does not train", "--stage adapt")
    old = tmp_path / "old"  # a run from before the discriminator snapshots
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("discrim*"))
    code, text, _ = run("select", "--run", old, "--score", "discriminator")
    assert_user_error(code, text, "steps 1, 2", "no discriminator saved")


def test_selected_without_a_selection_and_select_on_no_run(adapt_run, tmp_path):
    root, _ = adapt_run
    code, text, _ = run("evaluate", "--task", "synthetic", "--checkpoint", "selected", "--run", tmp_path)
    assert_user_error(code, text, "--checkpoint selected needs --run DIR", "keras-fada select")
    code, text, _ = run("select", "--run", tmp_path)
    assert_user_error(code, text, "holds no config.yaml")
