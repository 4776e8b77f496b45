"""SIGKILL of ``keras-fada train`` (the FADA adaptation stage: three optimisers, two input streams)
at each dangerous moment, then ``--resume``: the run ends with the configured step count and the
uninterrupted run's weights (issue 21). The kills are fault injections (``$KERAS_FADA_FAULT``), not
timing; the runs are single-threaded, hence bit-reproducible (see tests/support/crash_runs.py)."""

import json

import keras

from keras_fada import config as C
from keras_fada.training import tasks
from tests.support import crash_runs as cr

BACKEND = keras.backend.backend()
STEPS, PERIOD = 6, 2
# (b) inside the 2nd backup's weights write, (c) between a backup's two files, (a) between two
# backups (after step 5; the last backup is at step 4), (d) after training, before the report.
# The backends share the mechanism and differ in what it saves and restores (optimiser states, step
# counters, RNG): JAX and torch run two of the kills to keep the suite's time (each kill is a process).
KILLS = (
    ["weights:2", "between:1", "step:5", "report:"] if BACKEND == "tensorflow" else ["weights:2", "step:5"]
)


def test_kills_at_every_point_then_resume_end_with_the_uninterrupted_weights(tmp_path):
    root = tmp_path / "data"
    tasks.task_specs(C.load_config("synthetic", overrides=[*cr.TINY, f"data.root={root}"]))  # generated once
    init = cr.initial_checkpoint(tmp_path / "init.weights.h5")
    reference = cr.start(cr.train_command(root, tmp_path / "ref", init, STEPS, PERIOD), BACKEND)
    out = tmp_path / "killed"
    try:
        for i, kill in enumerate(KILLS):
            code, text = cr.run(cr.train_command(root, out, init, STEPS, PERIOD, resume=i > 0), BACKEND, kill)
            assert code == -9, f"{kill}: {text[-2000:]}"
        code, text = cr.run(cr.train_command(root, out, init, STEPS, PERIOD, resume=True), BACKEND)
        assert code == 0, text[-2000:]
        if "report:" in KILLS:
            assert "trained already (6 steps)" in text  # (d): completed, not re-initialised
    finally:
        ref_text, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_text[-2000:]
    ours = json.loads((out / "adapt" / "metrics.json").read_text())
    ref = json.loads((tmp_path / "ref" / "adapt" / "metrics.json").read_text())
    assert ours["steps"] == ref["steps"] == STEPS
    assert ours["miou"] == ref["miou"]
    rel = cr.max_relative_difference(
        out / "adapt" / "segmentor.weights.h5", tmp_path / "ref" / "adapt" / "segmentor.weights.h5"
    )
    assert rel <= 1e-6
    backups = sorted(p.name for p in (out / "adapt" / "backup").iterdir())
    assert backups == ["ckpt-000000004", "ckpt-000000006"]  # no temporary left, two kept
