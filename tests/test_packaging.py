"""The distribution installs every package and no top-level `cli` module."""

import pathlib

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "keras_fada").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "cli" not in listed and config["package-dir"]["keras_fada.cli"] == "cli"
    assert config["package-dir"]["keras_fada.configs"] == "configs"


def test_every_config_folder_is_listed_in_pyproject():
    # a task folder missing from `packages` would not be installed by a non-editable install
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {f"keras_fada.configs.{p.parent.name}" for p in (ROOT / "configs").glob("*/*.yaml")}
    assert folders <= set(config["packages"]), f"add {sorted(folders - set(config['packages']))} to packages"
    assert config["package-data"]["*"] == ["*.yaml"]
