"""What a stage keeps (issue 20 item 11): snapshots every checkpoint period (keep_snapshots), the
target-val curve while training (eval.period -> val_miou in history.csv), eval.batch_size at the
end-of-stage evaluation and eval.end_of_stage=false to skip it."""

import csv
import json
import math

from keras_fada.training import stages
from tests.support.cli import TINY, run


def test_snapshots_curve_eval_batch_size_and_skipping_the_evaluation(tmp_path, monkeypatch):
    seen = []
    original = stages.evaluation.evaluate_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(stages.evaluation, "evaluate_dataset", spy)
    out = tmp_path / "run"
    common = (
        "train",
        "--task",
        "synthetic",
        "--stage",
        "source",
        "--data-root",
        tmp_path / "data",
        "--quiet",
    )
    code, text, res = run(*common, "--output", out, *TINY, "source.steps=3", "keep_snapshots=2",
                          "eval.period=2", "eval.batch_size=2")  # fmt: skip
    assert code == 0, text + repr(res.exception)
    snapshots = sorted(p.name for p in (out / "source" / "snapshots").iterdir())
    assert snapshots == ["segmentor_iter000002.weights.h5", "segmentor_iter000003.weights.h5"]  # 1 dropped
    rows = list(csv.DictReader((out / "source" / "history.csv").open()))
    curve = [float(r["val_miou"]) for r in rows]
    assert len(curve) == 3 and math.isnan(curve[0]) and math.isnan(curve[2]) and 0 <= curve[1] <= 100
    assert seen == [2, 2]  # the curve's point at step 2 and the end-of-stage evaluation
    assert "miou" in json.loads((out / "source" / "metrics.json").read_text())

    seen.clear()
    code, text, res = run(*common, "--output", tmp_path / "skip", *TINY, "eval.end_of_stage=false")
    assert code == 0, text + repr(res.exception)
    assert seen == [] and "miou" not in json.loads(
        (tmp_path / "skip" / "source" / "metrics.json").read_text()
    )
