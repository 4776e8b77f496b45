"""``keras-fada``: train, evaluate, ccd, predict, convert; one module per command in this folder.

Errors from user mistakes (unknown task, bad config key, missing data or checkpoint, mismatched
checkpoint, a finished run without ``--resume``) print one line and exit with code 2. Help and
argument errors answer without loading a backend: each command imports it when it runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

import click  # noqa: E402

from keras_fada.cli.ccd import ccd  # noqa: E402
from keras_fada.cli.check_data import check_data  # noqa: E402
from keras_fada.cli.convert import convert  # noqa: E402
from keras_fada.cli.evaluate import evaluate  # noqa: E402
from keras_fada.cli.export import export  # noqa: E402
from keras_fada.cli.predict import predict  # noqa: E402
from keras_fada.cli.select import select  # noqa: E402
from keras_fada.cli.train import train  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """FADA (ECCV 2020) in Keras 3: fine-grained adversarial domain adaptation for segmentation."""


for command in (train, evaluate, ccd, predict, convert, check_data):
    cli.add_command(command)
cli.add_command(export)
cli.add_command(select)


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="keras-fada", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("interrupted; continue with --resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
