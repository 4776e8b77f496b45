"""Running the ``keras-fada`` command line in tests: click's CliRunner, the overrides that shrink the
synthetic task to seconds, and the check that a user mistake is one ``Error:`` line with exit code 2."""

from click.testing import CliRunner

from keras_fada.cli.main import cli

TINY = [
    "data.synthetic.num_source=12",
    "data.synthetic.num_source_val=2",
    "data.synthetic.num_target_train=4",
    "data.synthetic.num_target_val=2",
    "data.synthetic.height=32",
    "data.synthetic.width=64",
    "data.source_size=[32,64]",
    "data.target_size=[32,64]",
    "source.eval_size=[32,64]",
    "adapt.eval_size=[32,64]",
    "distill.eval_size=[32,64]",
    "distill.teacher_size=[32,64]",
    "distill.crop_size=[32,64]",
    "source.batch_size=2",
    "adapt.batch_size=4",
    "distill.batch_size=2",
    "source.steps=2",
    "adapt.steps=2",
    "distill.steps=2",
    "source.checkpoint_period=1",
    "adapt.checkpoint_period=1",
    "distill.checkpoint_period=1",
]


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    text = result.output  # stdout and stderr together (click >= 8.2)
    return result.exit_code, text, result


def assert_user_error(code, text, *fragments):
    assert code == 2, text
    assert "Traceback" not in text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    for f in fragments:
        assert f in text, text
