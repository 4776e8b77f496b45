"""``keras-fada check-data``: read every split of a task once, before any training, and report."""

from __future__ import annotations

import sys

import click

from keras_fada.cli.common import task_option, user_errors, with_data_root


@click.command("check-data")
@task_option
@click.option("--data-root", default=None, help="Dataset root (default: config data.root = datasets).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML merged on top.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.argument("overrides", nargs=-1)
@user_errors
def check_data(task, data_root, config_file, quiet, overrides):
    """Read every split of the task once and print a table: images and labels found, unpaired,
    unreadable or truncated files, label values the dataset never holds (image/label size mismatches
    are listed as notes: training resizes both)
    and the share of ignored pixels. Exit code 0 when clean, 2 otherwise.

    OVERRIDES are KEY=VALUE, e.g. num_classes=13 data.lists.target_val=my_list.txt.
    """
    from keras_fada import config as C
    from keras_fada.data.check import check_specs, format_reports
    from keras_fada.training import tasks

    cfg = C.load_config(task, None, config_file, with_data_root(overrides, data_root))
    reports = check_specs(tasks.task_specs(cfg), progress=not quiet)
    click.echo(format_reports(reports))
    if not all(r.clean for r in reports):
        sys.exit(2)
