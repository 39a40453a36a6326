"""The experiment configs ship in the package; `--config=<name>.py` names them without a checkout, and the
checkout's `experiments/configs/<name>.py` paths keep working (thin files over the packaged ones)."""

import pathlib
import subprocess
import sys

import pytest

from infotok_jax import configs
from infotok_jax.training import checkpointing
from tests import training_harness as harness

CHECKOUT_CONFIGS = harness.REPO / "experiments" / "configs"


def test_a_bare_packaged_name_resolves_to_the_installed_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    resolved = configs.resolve("host.py:host=ar,tiny")
    path, args = resolved.split(":", 1)
    assert args == "host=ar,tiny"
    assert pathlib.Path(path) == pathlib.Path(configs.__file__).parent / "host.py"
    assert configs.resolve("tokenizer.py") == str(configs.packaged_path("tokenizer.py"))


def test_an_existing_file_wins_over_the_packaged_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "host.py").write_text("")
    assert configs.resolve("host.py:tiny") == "host.py:tiny"
    assert configs.resolve(f"{CHECKOUT_CONFIGS / 'host.py'}:tiny") == f"{CHECKOUT_CONFIGS / 'host.py'}:tiny"


def test_resolve_argv_touches_only_the_config_value(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    host = str(configs.packaged_path("host.py"))
    argv = ["prog", "--config=host.py:tiny", "--config.infotok.beta=0", "--workdir=w"]
    assert configs.resolve_argv(argv) == [
        "prog",
        f"--config={host}:tiny",
        "--config.infotok.beta=0",
        "--workdir=w",
    ]
    assert configs.resolve_argv(["prog", "--config", "host.py"]) == ["prog", "--config", host]


def test_an_unknown_config_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        configs.resolve_argv(["prog", "--config=hots.py:tiny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hots.py" in err and "base.py, host.py, tokenizer.py" in err


@pytest.mark.parametrize(
    "name, arg", [("host.py", "host=ar,tiny"), ("tokenizer.py", "tiny"), ("base.py", "smoke")]
)
def test_checkout_path_and_packaged_name_build_the_same_config(name, arg, monkeypatch, tmp_path):
    from_checkout = harness.load_config(f"{CHECKOUT_CONFIGS / name}:{arg}")
    monkeypatch.chdir(tmp_path)
    packaged = harness.load_config(configs.resolve(f"{name}:{arg}"))
    assert checkpointing.config_to_json(packaged) == checkpointing.config_to_json(from_checkout)


def test_the_training_binary_names_the_fix_for_an_unknown_config(tmp_path):
    """The binary's side of `resolve_argv` (tests/test_installed_package.py trains `host.py:tiny` from a
    pip install outside the checkout)."""
    missing = subprocess.run(
        [sys.executable, "-m", "infotok_jax.train", "--config=hots.py", "--workdir=w"],
        env=harness.env_for(1), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2, missing.stderr[-3000:]
    assert missing.stderr.strip().splitlines() == [
        "error: --config=hots.py: no such file 'hots.py'; give a config file's path or a packaged config's "
        "name: base.py, host.py, tokenizer.py (e.g. --config=host.py:tiny)"
    ]
    assert not (tmp_path / "w").exists()
