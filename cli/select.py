"""``keras-fada select``: chooses a stage's snapshot without target labels (issue 25)."""

from __future__ import annotations

import json
import math
import os

import click

from keras_fada.cli.common import user_errors, with_data_root
from keras_fada.config import STAGES

# "last" and keras_fada.selection.SCORES, without importing Keras
SCORE_NAMES = ("last", "entropy", "infomax", "snd", "discriminator")
DEFAULT_SCORE = "last"


def _fmt(v, width=9, digits=4):
    return f"{'-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{digits}f}':>{width}}"


@click.command("select")
@click.option("--run", "run_dir", required=True, help="A run directory (keras-fada train --output).")
@click.option("--stage", type=click.Choice(STAGES), default="adapt", show_default=True)
@click.option(
    "--score", type=click.Choice(SCORE_NAMES), default=DEFAULT_SCORE, show_default=True,
    help="entropy, infomax (lower is better), snd, discriminator (the adaptation stage's own D: its "
    "target/source confusion; higher is better) or last (the final weights).",
)  # fmt: skip
@click.option("--images", type=click.IntRange(min=1), default=64, show_default=True,
              help="Unlabelled target train images scored (a seeded subset).")  # fmt: skip
@click.option("--pixels", type=click.IntRange(min=2), default=256, show_default=True,
              help="Pixels sampled per image for SND.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-labels", is_flag=True, help="Skip the target-val mIoU (the oracle) even where labelled.")
@click.option("--data-root", default=None)
@click.option(
    "--output", default=None, help="JSON file (default: <run>/selection.json, read by --checkpoint selected)."
)
@click.argument("overrides", nargs=-1)
@user_errors
def select(run_dir, stage, score, images, pixels, seed, no_labels, data_root, output, overrides):
    """Scores every snapshot of a stage on unlabelled target images (the final weights always a row),
    prints the table and names the chosen snapshot; with target-val labels also Kendall's tau of each
    score with mIoU and its selection gap (best mIoU minus the chosen one's)."""
    from keras_fada import config as C
    from keras_fada import selection
    from keras_fada.training import RunError

    path = os.path.join(run_dir, stage, "config.yaml")
    if not os.path.isfile(path):
        path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise RunError(
            f"--run {run_dir!r} holds no config.yaml; expected a run directory of keras-fada train"
        )
    base = C.read_yaml(path)
    cfg = C.load_config(
        base["task"], base.get("backbone"), None, with_data_root(overrides, data_root), base=base
    )
    selection.snapshots_to_score(run_dir, stage, score)  # a run that cannot be scored: one line, no work
    click.echo(f"[select] {stage} of {run_dir}: {images} target images, score {score}")
    result = selection.select_run(
        cfg, run_dir, stage, score, images, pixels, seed, labels=not no_labels, report=lambda row: None
    )
    labelled = "agreement" in result
    widths = {n: max(9, len(n) + 1) for n in selection.SCORES}
    header = "".join(f"{n:>{w}}" for n, w in widths.items())
    click.echo(f"{'step':>8}" + header + (f"{'mIoU':>9}" if labelled else ""))
    for row in result["rows"]:
        mark = " *" if row["step"] == result["chosen"]["step"] else ""
        line = f"{row['step']:>8}" + "".join(_fmt(row[n], w) for n, w in widths.items())
        click.echo(line + (_fmt(row["miou"], digits=2) if labelled else "") + mark)
    if labelled:
        click.echo(f"{'score':<14}{'tau':>7}{'step':>8}{'mIoU':>8}{'gap':>7}   (oracle: target-val labels)")
        for name, a in result["agreement"].items():
            click.echo(
                f"{name:<14}{_fmt(a.get('tau'), 7, 2)}{a['chosen_step']:>8}{a['miou']:>8.2f}{a['gap']:>7.2f}"
            )
    output = output or os.path.join(run_dir, "selection.json")
    with open(output, "w") as f:
        json.dump(result, f, indent=1)
    click.echo(
        f"chosen by {score}: step {result['chosen']['step']} ({result['chosen']['checkpoint']}); wrote {output}"
    )
