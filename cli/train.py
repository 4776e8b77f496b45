"""``keras-fada train``: one stage or the whole chain (source-only -> FADA -> self-distillation)."""

from __future__ import annotations

import os

import click

from keras_fada.cli.common import BACKBONE, UserError, task_option, user_errors, with_data_root
from keras_fada.config import STAGES
from keras_fada.data.check import precheck_task


@click.command(context_settings={"ignore_unknown_options": False})
@task_option
@click.option("--stage", type=click.Choice([*STAGES, "all"]), default="all", show_default=True)
@click.option("--backbone", type=BACKBONE, default=None, help="Default: the task's (synthetic: small).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML merged on top.")
@click.option("--data-root", default=None, help="Dataset root (default: config data.root = datasets).")
@click.option(
    "--pretrained",
    default=None,
    help="ImageNet weights (resnet101-5d3b4d8f.pth / vgg16-00b39a1b.pth), or 'scratch'.",
)
@click.option("--output", default=None, help="Run directory (default: runs/<task>-<backbone>).")
@click.option("--resume", is_flag=True, help="Continue the run in --output.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--devices", default=None, help="Data parallel over N devices, or 'all' (config key devices).")
@click.argument("overrides", nargs=-1)
@user_errors
def train(
    task, stage, backbone, config_file, data_root, pretrained, output, resume, quiet, devices, overrides
):
    """Train one stage or the whole chain (source-only -> FADA -> pseudo labels -> self-distillation).

    OVERRIDES are KEY=VALUE with dotted keys, e.g. lambda_adv=0.01 encoder.mode=binary source.steps=500.
    """
    import time

    from keras_fada import config as C

    stages = list(STAGES) if stage == "all" else [stage]
    overrides = with_data_root(overrides, data_root) + ([f"pretrained={pretrained}"] if pretrained else [])
    overrides += [f"devices={0 if devices == 'all' else devices}"] if devices else []
    base = None
    if resume and output and os.path.isfile(os.path.join(output, "config.yaml")):
        base = C.read_yaml(os.path.join(output, "config.yaml"))
    cfg = C.load_config(task, backbone, config_file, overrides, base=base)
    output = output or os.path.join("runs", f"{task}-{cfg['backbone']}")
    if resume and not os.path.isdir(output):
        raise UserError(f"nothing to resume in {output!r}; run without --resume to start it")
    from keras_fada.training import run_dir as R

    R.check_output(output)  # a file, a read-only place: one line before any work
    R.check_run_dir(output, stages, resume)
    R.check_pretrained(cfg, stages, output)  # ImageNet weights where a stage starts from them
    precheck_task(cfg, stages)  # every split the stages read is listed and paired, before any network
    from keras_fada.training import distribute

    distribute.setup(cfg, stages)  # before the backend initialises its devices
    if distribute.rank() > 0:  # torchrun / jax.distributed: only process 0 writes the run directory
        output = os.path.join(output, f".rank{distribute.rank()}")
    from keras_fada.training.stages import run_stages  # the backend loads here, after every check

    t0 = time.perf_counter()
    summary = run_stages(cfg, stages, output, resume=resume, verbose=0 if quiet else 1, report=click.echo)
    _print_summary(summary, time.perf_counter() - t0, output)


def _print_summary(summary, seconds, output):
    stages = summary["stages"]
    src = stages.get("source", {}).get("miou")
    click.echo("")
    click.echo(f"{'stage':<10}{'target mIoU':>12}{'vs source-only':>16}   checkpoint")
    for name in STAGES:
        if name not in stages or "miou" not in stages[name]:
            continue
        m = stages[name]["miou"]
        gain = "" if name == "source" or src is None else f"{m - src:+.2f}"
        choice = stages[name].get("checkpoint_choice", "")  # "": a stage trained before it was recorded
        extra = f"   mIoU* {stages[name]['miou13']:.2f}" if "miou13" in stages[name] else ""
        click.echo(f"{name:<10}{m:>12.2f}{gain:>16}   {choice:<16}{extra}".rstrip())
    click.echo(f"run directory: {output} ({seconds:.0f} s)")
