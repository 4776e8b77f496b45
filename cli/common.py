"""What every command shares: the one-line user error, the task and backbone options, and turning
a checkpoint, sizes and scales given on the command line into values."""

from __future__ import annotations

import errno
import functools
import os

import click

from keras_fada.config import ConfigError, backbones
from keras_fada.training.tasks import TASK_NAMES


class UserError(click.UsageError):
    """One line, exit code 2, no usage text."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


def _known_errors():
    from keras_fada.data.datasets import DatasetError
    from keras_fada.training import RunError

    return (ConfigError, DatasetError, RunError)


# Output mistakes (a full disk, a read-only or missing place, a file where a folder belongs): one line.
_OUTPUT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
}


def user_errors(fn):
    """Converts the library's user-mistake exceptions into :class:`UserError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _known_errors() as e:
            raise UserError(" ".join(str(e).split())) from None
        except OSError as e:
            if e.errno not in _OUTPUT_ERRNOS:
                raise
            where = f" {e.filename!r}" if e.filename else ""
            raise UserError(
                f"cannot write{where}: {e.strerror}; free space or choose another --output"
            ) from None

    return wrapper


BACKBONE = click.Choice(backbones())


def _check_task(ctx, param, value):
    if value is not None and value not in TASK_NAMES:
        raise click.BadParameter(f"unknown task {value!r}; tasks: {', '.join(TASK_NAMES)}")
    return value


task_option = click.option(
    "--task", required=True, callback=_check_task, help=f"One of: {', '.join(TASK_NAMES)}."
)


def with_data_root(overrides, data_root) -> list:
    """The ``KEY=VALUE`` overrides plus ``data.root`` when ``--data-root`` is given."""
    return [*overrides, f"data.root={data_root}"] if data_root else list(overrides)


def config_near(checkpoint) -> str:
    """The run's ``config.yaml``: inside a preset folder, else beside the checkpoint file (a snapshot's
    in its stage folder)."""
    if os.path.isdir(checkpoint):
        return os.path.join(checkpoint, "config.yaml")
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.basename(folder) == "snapshots":
        folder = os.path.dirname(folder)
    return os.path.join(folder, "config.yaml")


run_option = click.option(
    "--run", "run_dir", default=None, help="With --checkpoint selected: the run `keras-fada select` chose in."
)


def resolve_checkpoint(checkpoint, run_dir) -> str:
    """``--checkpoint selected --run DIR``: the snapshot named in ``DIR/selection.json``; else as given."""
    return choose_checkpoint(checkpoint, run_dir)[0]


def choose_checkpoint(checkpoint, run_dir) -> tuple[str, str]:
    """:func:`resolve_checkpoint` and how the checkpoint was chosen (``last step 400``, ``selected by
    snd (label-free): step 200``...: :func:`~keras_fada.training.run_dir.checkpoint_choice`), said
    beside every mIoU."""
    from keras_fada.training.run_dir import checkpoint_choice

    if checkpoint != "selected":
        return checkpoint, checkpoint_choice(checkpoint)
    path = os.path.join(run_dir or "", "selection.json")
    if not run_dir or not os.path.isfile(path):
        raise UserError(
            f"--checkpoint selected needs --run DIR holding selection.json (got --run {run_dir!r}); "
            "run `keras-fada select --run DIR` first"
        )
    import json

    with open(path) as f:
        selection = json.load(f)
    checkpoint = os.path.join(run_dir, selection["chosen"]["checkpoint"])
    choice = checkpoint_choice(checkpoint, selection)
    click.echo(f"checkpoint: {selection['chosen']['checkpoint']}, {choice} ({path})")
    return checkpoint, choice


def checkpoint_config(task, checkpoint, backbone, data_root, config_file, overrides) -> dict:
    """The config to use a checkpoint with: its run's ``config.yaml`` beside it when that run was
    made for ``task`` (and ``backbone``), else the task's."""
    from keras_fada import config as C

    if not os.path.exists(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} does not exist")
    base = None
    near = config_near(checkpoint)
    if os.path.isfile(near):
        base = C.read_yaml(near)
        if base.get("task") != task or (backbone and backbone != base.get("backbone")):
            base = None
    return C.load_config(task, backbone, config_file, with_data_root(overrides, data_root), base=base)


def parse_scales(multiscale, scales, cfg) -> tuple:
    if scales is not None:
        try:
            values = tuple(float(s) for s in scales.split(","))
        except ValueError:
            values = ()
        if not values or not all(v > 0 for v in values):
            raise UserError(
                f"--scales must be comma-separated numbers > 0, e.g. 0.75,1.0,1.25; got {scales!r}"
            )
        return values
    if multiscale:
        return tuple(float(s) for s in cfg["eval"]["scales"])
    return (1.0,)


def parse_size(text):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return (h, w)
    except ValueError:
        raise UserError(f"--size must be HxW, e.g. 512x1024, got {text!r}") from None


def sibling_path(checkpoint, suffix) -> str:
    """``runs/x/segmentor.weights.h5`` + ``.eval.json`` -> ``runs/x/segmentor.eval.json``."""
    stem = checkpoint.rstrip("/" + os.sep)  # a preset folder: beside it
    for ext in (".weights.h5", ".keras", ".pth", ".safetensors", ".npz"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return stem + suffix
