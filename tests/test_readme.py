"""The README's Python example runs as written, on the current backend, so that it cannot rot."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_example() -> str:
    """The first ```python block of the README's "## Python" section."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert blocks, "README.md: no ```python block under '## Python'"
    return blocks[0]


def test_command_line_facts_exist():
    """Every ``keras-fada`` command and every ``--option`` the README names exists in the CLI."""
    from keras_fada.cli.main import cli

    with open(README, encoding="utf-8") as f:
        text = f.read()
    code = re.findall(r"^```bash\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    code += re.findall(r"`([^`\n]+)`", text)
    commands = set(re.findall(r"(?:^|&& )keras-fada ([a-z][a-z-]*)", "\n".join(code), flags=re.MULTILINE))
    assert commands and commands <= set(cli.commands), commands - set(cli.commands)
    known = {"--help"} | {
        opt for command in cli.commands.values() for param in command.params for opt in param.opts
    }
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert mentioned <= known, sorted(mentioned - known)


def test_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes its synthetic pair below the working directory
    namespace = {"__name__": "__readme__"}
    exec(compile(python_example(), "README.md (## Python)", "exec"), namespace)

    logits = np.asarray(namespace["logits"])
    assert logits.shape == (8, 64, 128, 19)
    assert np.isfinite(logits).all()
    for name in ("before", "after"):
        miou = namespace[name].history[-1]["val_miou"]
        assert 0.0 < miou <= 1.0, (name, miou)
    assert "target mIoU: source-only" in capsys.readouterr().out
