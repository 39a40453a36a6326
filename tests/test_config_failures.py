"""Bad configs fail before anything is written, and the evaluation binary scores only the run's config.

A refused training config leaves the workdir absent (or as it was), so the corrected rerun in the same
workdir is not refused as "a different config"; a failure after the workdir exists leaves no orbax thread
behind (no second traceback at exit). The evaluation binary refuses a config that differs from the run's
recorded config.json in a field that changes the model or the data, and a workdir that is not a run, all
read-only. Smaller guards: an inexact token count, a non-finite learning rate, an empty --workdir, NaN
model outputs in the evaluators, a negative bandwidth given as a concrete jax array.
"""

import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import estimators as est
from infotok_jax import tasks
from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.evaluate import checkpoint_eval, generation, information_plane, understanding
from infotok_jax.training import checkpointing, trainer
from infotok_jax.training.config_checks import ConfigError
from tests import toy_task, training_harness

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"
TOY = REPO / "tests" / "configs" / "toy_regression.py"


def _load(path: pathlib.Path, *overrides: str):
    return training_harness.load_config(path, *overrides)


def _host(*overrides: str, spec: str = "host=ar,tiny"):
    return _load(pathlib.Path(f"{CONFIGS / 'host.py'}:{spec}"), *overrides)


def _train(config, workdir):
    return trainer.train_and_evaluate(config, tasks.build_task(config), workdir)


# Training: every check before the first write.


@pytest.mark.parametrize(
    "override,field",
    [
        ("--config.data.name=scenes99", "data.name"),
        ("--config.data.name=tfds:no_such_dataset", "data.name"),  # not prepared under data_dir
        ("--config.data.nuisance=2", "data.nuisance"),
        ("--config.data.eval_split=valid", "data.eval_split"),
        ("--config.data.text_vocab_size=8", "data.text_vocab_size"),
        ("--config.host.lm.num_heads=3", "host"),  # not a multiple of num_kv_heads=2
        ("--config.infotok.x_view_size=5", "infotok.x_view_size"),  # does not divide 32
        ("--config.data.eval_batch_size=12", "data.eval_batch_size"),  # 8 devices
        ("--config.optimizer.learning_rate=inf", "optimizer.learning_rate"),
        ("--config.optimizer.learning_rate=nan", "optimizer.learning_rate"),
        ("--config.init_from=MISSING", "init_from"),
    ],
)
def test_a_bad_training_config_fails_before_anything_is_written(tmp_path, override, field):
    missing = tmp_path / "no_such_run"
    config = _host(override.replace("MISSING", str(missing)))
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"^config\.{field}[:=]"):
        _train(config, workdir)
    assert not workdir.exists() and not missing.exists()  # nothing written, init_from not created


def test_an_unset_x_view_size_is_derived_from_the_image_size():
    from infotok_jax.infotok import views

    assert [views.derived_view_size(s, s) for s in (28, 32, 64, 16, 5)] == [7, 8, 8, 8, 5]
    images = jnp.arange(2 * 28 * 28 * 3, dtype=jnp.float32).reshape(2, 28, 28, 3)
    np.testing.assert_allclose(views.pixel_view(images), views.pixel_view(images, 7))  # Fashion-MNIST
    config = _host()
    config.infotok.x_view_size = None
    assert tasks.build_task(config).config.infotok.x_view_size is None  # accepted, derived when traced


def test_init_from_names_a_runs_checkpoints_dir(tmp_path):
    run = tmp_path / "finished"
    _record_fake_run(run, _host())
    with pytest.raises(ConfigError, match=f"use {run / 'checkpoints'}"):
        _train(_host(f"--config.init_from={run}"), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_refused_config_leaves_the_workdir_as_it_was_and_the_fix_runs(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    bad = _load(pathlib.Path(f"{TOY}:steps=2,lr=inf"))
    with pytest.raises(ConfigError, match="optimizer.learning_rate"):
        _train(bad, workdir)
    assert os.listdir(workdir) == []
    metrics = _train(_load(pathlib.Path(f"{TOY}:steps=2,eval=2")), workdir)  # same workdir: not refused
    assert np.isfinite(metrics["eval/mse"]) and (workdir / "config.json").exists()


def test_an_empty_workdir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--workdir is empty"):
        _train(_load(pathlib.Path(f"{TOY}:steps=2")), "")
    assert os.listdir(tmp_path) == []


def _config_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["host", "tokenizer"])
def test_a_token_count_is_honoured_exactly_or_refused(name):
    module = _config_module(name)
    with pytest.raises(ValueError, match=r"tokens=15 cannot be honoured.*\[1, 4, 16, 64, 256, 1024\]"):
        module.get_config("tokens=15")
    config = module.get_config("tokens=64")
    tokenizer = config.host.tokenizer if name == "host" else config.model
    assert (tokenizer.image_size // tokenizer.patch_size) ** 2 == 64


def test_a_data_error_after_the_workdir_exists_leaves_no_checkpoint_manager_open(tmp_path, monkeypatch):
    """An open orbax manager's background cleanup outlived a failing train iterator and printed 'cannot
    schedule new futures after interpreter shutdown' as a second traceback at exit."""
    opened, closed = [], []

    class SpyCheckpointer(checkpointing.Checkpointer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

        def close(self):
            closed.append(self)
            super().close()

    class Broken(toy_task.ToyRegressionTask):
        def train_iterator(self, mesh):
            raise RuntimeError("broken data")

    monkeypatch.setattr(checkpointing, "Checkpointer", SpyCheckpointer)
    config = _load(TOY)
    with pytest.raises(RuntimeError, match="broken data"):
        trainer.train_and_evaluate(config, Broken(config), tmp_path / "run")
    assert len(closed) == len(opened)


@pytest.mark.slow
def test_the_training_binary_refuses_with_one_line_and_exit_2(tmp_path):
    workdir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "infotok_jax.train",
            f"--config={CONFIGS / 'host.py'}:host=ar,tiny",
            "--config.data.nuisance=2",
            f"--workdir={workdir}",
        ],
        env=training_harness.env_for(1),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: config.data.nuisance: 2.0 must lie in [0, 1]" in out.stderr
    assert "Traceback" not in out.stderr and not workdir.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "config_arg,overrides,expected",
    [
        ("host.py:host=ar,tiny", ("--config.num_train_stepz=3",), "did you mean --config.num_train_steps?"),
        ("host.py:host=foo", (), "kind='foo' is unknown; use one of"),
        ("host.py:tokens=15", (), "tokens=15 cannot be honoured"),
        ("host.py:batch=eight", (), "batch='eight' is not an int; give e.g. batch=8"),
        ("no_such_config.py", (), "no such file"),
        ("SYNTAX_ERROR", (), "syntax error in"),
    ],
)
def test_flag_and_config_file_errors_are_one_line_with_exit_2(tmp_path, config_arg, overrides, expected):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    config = broken if config_arg == "SYNTAX_ERROR" else CONFIGS / config_arg
    workdir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "infotok_jax.train", f"--config={config}", *overrides, f"--workdir={workdir}"],
        env=training_harness.env_for(1),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith("error: ") and expected in out.stderr, out.stderr[-3000:]
    assert len(out.stderr.strip().splitlines()) == 1 and not workdir.exists()


def test_a_typo_in_a_field_name_gets_the_closest_field():
    from infotok_jax import flag_errors

    config = _load(TOY)
    message = flag_errors.unknown_field_message("optimizer.learnin_rate", config)
    assert message.endswith("did you mean --config.optimizer.learning_rate?")
    assert flag_errors.unknown_field_message("optimizer.learning_rate", config) is None


@pytest.fixture(scope="module")
def prepared_data_dir(tmp_path_factory):
    """The tiny host's dataset, prepared once in its own data dir."""
    from infotok_jax.data import experiment_data, preparation

    data_dir = tmp_path_factory.mktemp("tfds")
    data = _host(f"--config.data.data_dir={data_dir}").data
    prepared = preparation.prepare(data.name, data.data_dir, **experiment_data.builder_kwargs(data))
    return data_dir, pathlib.Path(prepared.path)


def _largest_array_record(version_dir: pathlib.Path) -> pathlib.Path:
    return max(version_dir.glob("*.array_record*"), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["a file", "truncated", "deleted", "read-only"])
def test_a_bad_data_dir_fails_before_anything_is_written(tmp_path, prepared_data_dir, damage):
    source, version_dir = prepared_data_dir
    data_dir = tmp_path / "tfds"
    shutil.copytree(source, data_dir)
    copied_version = data_dir / version_dir.relative_to(source)
    expected = "is corrupt"
    if damage == "a file":
        data_dir = tmp_path / "a_file"
        data_dir.write_text("not a directory")
        expected = "is a file, not a directory"
    elif damage == "truncated":
        record = _largest_array_record(copied_version)
        record.write_bytes(record.read_bytes()[:100])
    elif damage == "deleted":
        _largest_array_record(copied_version).unlink()
    workdir = tmp_path / "run"
    with contextlib.ExitStack() as stack:
        if damage == "read-only":  # not prepared there, and nowhere to build it
            empty = tmp_path / "empty"
            empty.mkdir()
            data_dir = stack.enter_context(training_harness.read_only_view(empty, tmp_path / "ro"))
            expected = "is not writable, so it cannot be built there"
        with pytest.raises(ConfigError, match=r"^config\.data\.data_dir: ") as error:
            _train(_host(f"--config.data.data_dir={data_dir}"), workdir)
    assert expected in str(error.value)
    assert not workdir.exists()


@pytest.mark.slow
def test_the_evaluation_binary_refuses_a_read_only_workdir_at_once(tmp_path, run_workdir):
    """It used to fail with a traceback after a minute of scoring, when writing the report."""
    with training_harness.read_only_view(run_workdir, tmp_path / "ro") as workdir:
        out = subprocess.run(
            [sys.executable, "-m", "infotok_jax.evaluate", f"--config={CONFIGS / 'host.py'}:host=ar,tiny",
             f"--workdir={workdir}"],
            env=training_harness.env_for(1), cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"error: --workdir {workdir} is not writable" in out.stderr and "Traceback" not in out.stderr


# Evaluation: the run's recorded config.


def _record_fake_run(workdir: pathlib.Path, config) -> None:
    """A run's workdir as the evaluation binary sees it before restoring: config.json and one step."""
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointing.check_or_record_config(workdir, config)
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=1, async_save=False)
    checkpointer.save(4, {"w": jnp.zeros(2)}, {}, {"step": 4})
    checkpointer.close()


@pytest.fixture(scope="module")
def run_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("host_run")
    _record_fake_run(workdir, _host())
    return workdir


@pytest.mark.parametrize(
    "overrides,spec,field",
    [
        (("--config.data.nuisance=0",), "host=ar,tiny", "data.nuisance"),
        ((), "host=masked,tiny", "host.kind"),
        (("--config.host.lm.embed_dim=64",), "host=ar,tiny", "host.lm.embed_dim"),
    ],
)
def test_evaluation_refuses_a_config_other_than_the_runs(run_workdir, overrides, spec, field):
    config = _host(*overrides, spec=spec)
    with pytest.raises(ConfigError, match=rf"differs from the run's .*{field} \(run: "):
        checkpoint_eval.evaluate_checkpoint(config, tasks.build_task(config), run_workdir)
    assert not (run_workdir / "eval").exists()


def test_evaluation_knobs_may_differ(run_workdir):
    from infotok_jax.evaluate import run_checks  # (new module: the other tests also run on older code)

    config = _host(
        "--config.evaluation.batch_size=16",
        "--config.evaluation.splits=('test',)",
        "--config.optimizer.learning_rate=0.5",
        "--config.host.sampling.temperature=1.0",
        "--config.num_train_steps=100",
        "--config.data.num_threads=4",
    )
    run_checks.check_run(config, run_workdir)


def test_evaluation_refuses_a_workdir_that_is_not_a_run(tmp_path):
    config = _host()
    task = tasks.build_task(config)
    with pytest.raises(ConfigError, match="no config.json"):
        checkpoint_eval.evaluate_checkpoint(config, task, tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
    recorded_only = tmp_path / "recorded"
    recorded_only.mkdir()
    checkpointing.check_or_record_config(recorded_only, config)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        checkpoint_eval.evaluate_checkpoint(config, task, recorded_only)
    assert os.listdir(recorded_only) == ["config.json"]
    with pytest.raises(ConfigError, match="--workdir is empty"):
        checkpoint_eval.evaluate_checkpoint(config, task, "")
    assert json.loads((recorded_only / "config.json").read_text())["task"] == "host"


def test_evaluation_batch_must_split_over_the_devices(run_workdir):
    config = _host("--config.evaluation.batch_size=12")  # 8 devices
    with pytest.raises(ConfigError, match=r"^config\.evaluation\.batch_size: 12 is not divisible"):
        checkpoint_eval.evaluate_checkpoint(config, tasks.build_task(config), run_workdir)


# NaN model outputs read as undefined, not 0.0.


def test_information_plane_measures_are_nan_for_nan_tokens():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6))
    y = x[:, :2] @ rng.normal(size=(2, 3))
    assert information_plane.probe_r2(x, y, 2)[0] > 0.9
    x[3, 2] = np.nan
    assert np.isnan(information_plane.probe_r2(x, y, 2)).all()
    assert np.isnan(information_plane.nhsic_with_floor(x, y, 2)).all()
    assert np.isnan(information_plane.probe_r2(np.full_like(x, np.nan), y, 2)).all()


def _scene_batch(n: int = 8) -> dict:
    objects = [
        scenes_spec.sample_objects(scenes_spec.split_rng(0, "validation", i), "validation") for i in range(n)
    ]
    images = np.stack(
        [scenes_render.render(o, 32, 0.0, np.random.default_rng(i)) for i, o in enumerate(objects)]
    )
    return {
        "image": images,
        "caption_tokens": np.zeros((n, 4), np.int32),
        "objects": np.stack([scenes_spec.objects_to_array(o) for o in objects]),
        "question_tokens": np.zeros((n, 4), np.int32),
        "answer_tokens": np.zeros((n, 3), np.int32),
        "question_type": np.zeros((n,), np.int32),
    }


def test_generation_rates_are_nan_for_nan_images():
    batch = _scene_batch()
    nan_images = np.full(batch["image"].shape, np.nan, np.float32)
    out = generation.evaluate_generation(
        lambda captions, key: nan_images, [batch], jax.random.key(0), image_size=32, other_draws=1
    )
    assert np.isnan(out["all_correct"]) and np.isnan(out["color_correct"])
    assert out["truth_all_correct"] == pytest.approx(1.0) and np.isfinite(out["floor_noise_all_correct"])


def test_understanding_refuses_nan_images():
    batch = _scene_batch()
    batch["image"] = np.full(batch["image"].shape, np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        understanding.evaluate_understanding(lambda i, q, n: np.zeros((len(i), n), np.int32), [batch], None)


# Bandwidths: a concrete jax array is checked like numpy; a traced one cannot be.


@pytest.mark.parametrize("bandwidth", [jnp.float32(-1.0), jnp.asarray(0.0), jnp.asarray(jnp.nan)])
def test_a_concrete_jax_bandwidth_is_checked_like_numpy(bandwidth):
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="bandwidth_x must be positive"):
        est.hsic(x, x, bandwidth_x=bandwidth)
    with pytest.raises(ValueError, match="bandwidth_x must be positive"):
        jax.eval_shape(lambda a: est.hsic(a, a, bandwidth_x=bandwidth), x)  # closed over: still concrete
    traced = jax.jit(lambda a, b: est.hsic(a, a, bandwidth_x=b))(x, bandwidth)  # documented: unchecked
    assert traced.shape == ()
