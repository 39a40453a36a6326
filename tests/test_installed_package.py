"""An installed (non-editable) package writes nothing into its own directory, and paths that cannot
work (a gs:// data dir, a gs:// workdir without gcsfs) fail fast instead of becoming local folders.

The end-to-end test installs a copy of the package with `pip install --no-deps --target` (a real,
non-editable build; the dependencies come from the test's environment), runs a tiny training of the
packaged host config (`infotok-train --config=host.py:tiny`) from a folder outside the repository with
that copy first on sys.path, and checks that the installed tree is
unchanged afterwards; the same install holds the LICENSE, `py.typed` and both console scripts, whose
`--help` shows the binary's docstring.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest

from infotok_jax import compilation_cache, storage
from infotok_jax.data import experiment_data, preparation
from infotok_jax.training import config_checks
from tests import training_harness as harness


@pytest.fixture
def restore_cache_config():
    saved = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", saved)


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("INFOTOK_JAX_CACHE_DIR", str(tmp_path / "override"))
    assert compilation_cache.cache_dir(4) == tmp_path / "override" / "devices4"
    monkeypatch.delenv("INFOTOK_JAX_CACHE_DIR")
    checkout = pathlib.Path(compilation_cache.__file__).resolve().parent.parent
    assert compilation_cache.cache_dir(4) == checkout / ".cache" / "jax" / "devices4"  # this checkout
    monkeypatch.setattr(compilation_cache, "_source_checkout", lambda: None)  # as installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.cache_dir(4) == tmp_path / "xdg" / "infotok_jax" / "jax" / "devices4"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation_cache.cache_dir(1) == tmp_path / "home" / ".cache" / "infotok_jax" / "jax" / "devices1"


def test_enable_keeps_the_users_jax_cache_dir(monkeypatch, tmp_path, restore_cache_config):
    monkeypatch.delenv("INFOTOK_JAX_CACHE_DIR", raising=False)
    mine = tmp_path / "my_jax_cache"
    jax.config.update("jax_compilation_cache_dir", str(mine))
    assert compilation_cache.enable(device_count=8) == mine
    assert jax.config.jax_compilation_cache_dir == str(mine)
    assert not mine.exists()  # used as given, not created or keyed by device count
    monkeypatch.setenv("INFOTOK_JAX_CACHE_DIR", str(tmp_path / "project"))  # the project override wins
    assert compilation_cache.enable(device_count=8) == tmp_path / "project" / "devices8"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "project" / "devices8")


def test_default_data_dir_is_tfds_data_dir_else_the_tfds_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    assert experiment_data.default_data_dir() == str(tmp_path / "tfds")
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert experiment_data.default_data_dir() == str(tmp_path / "tensorflow_datasets")


def test_gs_data_dir_fails_fast_and_creates_nothing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    c = experiment_data.default_config("scenes")
    c.data_dir = "gs://bucket/tfds"
    with pytest.raises(ValueError, match="gcsfuse"):  # the data layer, for any caller
        experiment_data.ensure_prepared(c)
    with pytest.raises(ValueError, match="gcsfuse"):
        preparation.prepare("scenes32", "gs://bucket/tfds")
    spec = importlib.util.spec_from_file_location("host_config", harness.HOST_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.data.data_dir = "gs://bucket/tfds"
    with pytest.raises(config_checks.ConfigError, match=r"config\.data\.data_dir"):
        config_checks.check_training_config(config)  # the trainer's first check: before any write
    assert list(tmp_path.iterdir()) == []


def test_gs_workdir_without_gcsfs_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    real_find_spec = storage.importlib.util.find_spec
    monkeypatch.setattr(
        storage.importlib.util, "find_spec", lambda name: None if name == "gcsfs" else real_find_spec(name)
    )
    with pytest.raises(config_checks.ConfigError, match=r"infotok-jax\[gcs\]"):
        config_checks.check_workdir_writable("gs://bucket/run")
    assert list(tmp_path.iterdir()) == []


BINARIES = {"infotok-train": "infotok_jax.train", "infotok-evaluate": "infotok_jax.evaluate.__main__"}


def _first_doc_line(module: str) -> str:
    """Read from the source: importing both binaries here would define their absl flags twice."""
    source = pathlib.Path(importlib.util.find_spec(module).origin).read_text()
    return ast.get_docstring(ast.parse(source)).splitlines()[0]


@pytest.mark.parametrize(
    "script, flag",
    [("infotok-train", "--help"), ("infotok-train", "--helpfull"), ("infotok-evaluate", "--help")],
)
def test_console_script_help_shows_the_docstring(script, flag):
    """What pip's generated wrapper runs (a `__main__` without docstring or flags, argv[0] the script)."""
    module = BINARIES[script]
    wrapper = f"import sys; from {module} import run; sys.argv[0] = {script!r}; sys.exit(run())"
    result = subprocess.run(
        [sys.executable, "-c", wrapper, flag], env=harness.env_for(1), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.stdout.startswith(_first_doc_line(module)), result.stdout + result.stderr
    assert "--workdir" in result.stdout and "--config" in result.stdout  # the binary's own flags
    if flag == "--helpfull":
        assert "--heartbeat_timeout_seconds" in result.stdout  # and every other module's


def _tree(root: pathlib.Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_installed_copy_trains_from_outside_the_repo_and_writes_nothing_into_itself(tmp_path):
    source = tmp_path / "source"  # pip builds in the source tree (build/, *.egg-info): use a copy
    shutil.copytree(harness.REPO / "infotok_jax", source / "infotok_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy(harness.REPO / name, source / name)
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not available in this environment")
    assert build.returncode == 0, build.stderr[-3000:]
    before = _tree(site)
    assert (site / "infotok_jax" / "py.typed").exists()
    (dist_info,) = site.glob("infotok_jax-*.dist-info")
    assert "License-Expression: Apache-2.0" in (dist_info / "METADATA").read_text()
    assert "Apache License" in (dist_info / "licenses" / "LICENSE").read_text()
    outside = tmp_path / "outside"
    outside.mkdir()
    env = {
        **harness.env_for(1),
        "PYTHONPATH": str(site),
        "HOME": str(tmp_path / "home"),
        "TFDS_DATA_DIR": str(tmp_path / "tfds"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    env.pop("INFOTOK_JAX_CACHE_DIR", None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    where = subprocess.run(
        [sys.executable, "-c", "import infotok_jax; print(infotok_jax.__file__)"],
        env=env, cwd=outside, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    for script, module in BINARIES.items():
        helped = subprocess.run(
            [str(site / "bin" / script), "--help"], env=env, cwd=outside, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert helped.stdout.startswith(_first_doc_line(module)), helped.stdout + helped.stderr
        assert "--workdir" in helped.stdout
    result = subprocess.run(  # the packaged config by name: no checkout needed
        [str(site / "bin" / "infotok-train"), "--config=host.py:tiny", "--workdir=w"],
        env=env, cwd=outside, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert (outside / "w" / "checkpoints").is_dir() and (outside / "w" / "metrics.jsonl").exists()
    assert any((tmp_path / "xdg" / "infotok_jax" / "jax" / "devices1").iterdir())  # the compilation cache
    assert any((tmp_path / "tfds").iterdir())  # the dataset
    after = {k: v for k, v in _tree(site).items() if "__pycache__" not in k}
    assert after == {k: v for k, v in before.items() if "__pycache__" not in k}
    assert not (tmp_path / "home" / "tensorflow_datasets").exists()
