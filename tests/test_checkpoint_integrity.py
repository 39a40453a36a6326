"""Checkpoint integrity and workdir safety: checksums and fallback, read-only readers, the workdir lock,
the finite-state guard before saves, SIGINT, and which config changes a workdir accepts on resume.

Most tests run the trainer in-process on the toy regression task (seconds) against copies of one trained
workdir; one test runs the binary to send it real signals.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from infotok_jax import sharding
from infotok_jax.evaluate import checkpoint_eval
from infotok_jax.training import (
    checkpoint_integrity,
    checkpointing,
    config_checks,
    train_state,
    trainer,
    workdir_lock,
)
from tests import training_harness as harness
from tests.toy_task import ToyRegressionTask


def _config(args: str):
    spec = importlib.util.spec_from_file_location("toy_regression_config", harness.TOY_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(args)


def _train(workdir, args: str, **overrides):
    config = _config(args)
    for name, value in overrides.items():
        config[name] = value
    return trainer.train_and_evaluate(config, ToyRegressionTask(config), workdir)


# Wide enough that most of the array file is stored raw, where a flipped bit restores without error.
ARGS = "steps=10,ckpt=5,hidden=1024"


def _variables(workdir, args=ARGS):
    """(numpy variables of the newest usable checkpoint, its step), through the evaluation reader."""
    config = _config(args)
    mesh = sharding.make_mesh(config.mesh_shape)
    variables, step = checkpoint_eval.restore_variables(ToyRegressionTask(config), config, workdir, mesh)
    return jax.tree.map(np.asarray, jax.device_get(variables)), step


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy run of 10 steps with checkpoints at 5 and 10 (never modified: tests work on copies)."""
    workdir = tmp_path_factory.mktemp("trained")
    _train(workdir, ARGS)
    return workdir


@pytest.fixture
def copy(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


def _step_dir(workdir, step: int):
    return workdir / "checkpoints" / str(step)


def _flip_low_bits(path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data), 7):
        data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _largest_array_file(step_dir):
    return max((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)


CORRUPTIONS = {
    "truncated manifest": lambda d: (d / "state" / "manifest.ocdbt").write_bytes(
        (d / "state" / "manifest.ocdbt").read_bytes()[:20]
    ),
    "missing _METADATA": lambda d: (d / "state" / "_METADATA").unlink(),
    "emptied state": lambda d: [shutil.rmtree(d / "state"), (d / "state").mkdir()],
    "garbled data item": lambda d: (d / "data" / "metadata").write_text("{garbled"),
    "garbled meta item": lambda d: (d / "meta" / "metadata").write_text("\x00\x01"),
    "flipped low bits in an array file": lambda d: _flip_low_bits(_largest_array_file(d)),
}


def test_every_saved_step_carries_checksums_that_verify(trained):
    assert harness.checkpoint_steps(trained) == [5, 10]
    for step in (5, 10):
        assert checkpoint_integrity.has_checksums(_step_dir(trained, step))
        assert checkpoint_integrity.verify(_step_dir(trained, step)) is None
    assert not (trained / workdir_lock.LOCK_FILE).exists()  # released at the end of the run


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupted_latest_step_is_detected_and_the_previous_one_used(copy, corruption, caplog):
    CORRUPTIONS[corruption](_step_dir(copy, 10))
    with caplog.at_level(logging.WARNING):
        _, step = _variables(copy)
    assert step == 5
    assert "Checkpoint step 10" in caplog.text and "unusable" in caplog.text
    assert "Using checkpoint step 5" in caplog.text
    assert harness.checkpoint_steps(copy) == [5, 10]  # a reader moves nothing


def _unverified_state(workdir, step: int):
    """The full train state of `step` restored by orbax alone (no checksum verification)."""
    config = _config(ARGS)
    mesh = sharding.make_mesh(config.mesh_shape)
    abstract = train_state.setup(ToyRegressionTask(config), config, mesh).abstract_state
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=3, read_only=True)
    try:
        return jax.tree.leaves(jax.device_get(checkpointer.restore(step, abstract)[0]))
    finally:
        checkpointer.close()


def _flip_silently(workdir, step: int, reference) -> None:
    """Flips one bit of step `step`'s largest array file where orbax restores it without error.

    Whether a flip is silent depends on where it lands in the zstd stream (a raw block restores changed
    values, a block header fails to decompress), and the bytes differ between CPUs, so candidate offsets
    are tried in turn and the first one orbax reads back as changed values is kept.
    """
    array_file = _largest_array_file(_step_dir(workdir, step))
    original = array_file.read_bytes()
    for offset in range(len(original) // 2, len(original), max(1, len(original) // 40)):
        data = bytearray(original)
        data[offset] ^= 0x01
        array_file.write_bytes(bytes(data))
        try:
            flipped = _unverified_state(workdir, step)
        except Exception:  # orbax re-raises tensorstore's decode error as a bare Exception
            continue  # landed in zstd framing: orbax itself notices, not the case under test
        if any(not np.array_equal(a, b) for a, b in zip(flipped, reference, strict=True)):
            return
    raise AssertionError(f"no offset of {array_file} gave a flip that orbax restores without error")


def test_a_silent_bit_flip_is_caught_by_the_checksum(copy, trained, caplog):
    _flip_silently(copy, 10, reference=_unverified_state(trained, 10))
    with caplog.at_level(logging.WARNING):
        _, step = _variables(copy)
    assert step == 5 and "sha256 mismatch" in caplog.text


def test_a_newest_step_without_checksums_is_not_restored_even_when_orbax_reads_it(copy, trained, caplog):
    """A flipped bit and no checksum file (what a kill between a save and its hashing left): the step
    restores without error in orbax, so only refusing it keeps the flip out of training."""
    _flip_silently(copy, 10, reference=_unverified_state(trained, 10))
    (_step_dir(copy, 10) / checkpoint_integrity.CHECKSUMS_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        _train(copy, ARGS)
    assert "Checkpoint step 10" in caplog.text and "cannot be verified" in caplog.text
    assert "so it is not restored" in caplog.text and "Using checkpoint step 5" in caplog.text
    assert [p.name.split("_")[0] for p in (copy / "corrupt_checkpoints").iterdir()] == ["10"]
    redone, step = _variables(copy)
    reference, _ = _variables(trained)
    assert step == 10
    jax.tree.map(np.testing.assert_array_equal, redone, reference)


def test_an_older_step_without_checksums_is_an_error_and_a_trusted_one_can_be_vouched_for(copy):
    CORRUPTIONS["missing _METADATA"](_step_dir(copy, 10))
    (_step_dir(copy, 5) / checkpoint_integrity.CHECKSUMS_FILE).unlink()
    with pytest.raises(checkpointing.NoUsableCheckpointError) as error:
        _train(copy, ARGS)  # exit 2
    message = str(error.value)
    assert "step 5: no checksum file" in message and "the file was deleted, an error" in message
    assert f"checkpoint_integrity {_step_dir(copy, 5)}." in message
    checkpoint_integrity.main(["checkpoint_integrity", str(_step_dir(copy, 5))])
    assert _variables(copy)[1] == 5


def test_checksums_are_in_the_step_before_orbax_commits_it(tmp_path, monkeypatch):
    """Hashing after the commit left a window (a whole checkpoint period, for async saves) in which a
    kill left the newest step without checksums; now orbax's finalization callback writes them into
    the temporary directory that the commit renames."""
    seen = []
    write = checkpoint_integrity.write_checksums
    monkeypatch.setattr(checkpoint_integrity, "write_checksums", lambda d: [seen.append(d), write(d)])
    _train(tmp_path / "run", "steps=2,ckpt=1")
    assert len(seen) == 2 and all(".orbax-checkpoint-tmp" in str(d) for d in seen), seen
    for step in (1, 2):
        assert checkpoint_integrity.verify(_step_dir(tmp_path / "run", step)) is None


def test_no_usable_step_fails_naming_the_steps_and_the_remedy(copy):
    for step in (5, 10):
        (_step_dir(copy, step) / "state" / "_METADATA").unlink()
    with pytest.raises(checkpointing.NoUsableCheckpointError) as error:
        _train(copy, ARGS)
    message = str(error.value)
    assert "step 10:" in message and "step 5:" in message and "new --workdir" in message
    assert issubclass(checkpointing.NoUsableCheckpointError, checkpointing.IncompatibleWorkdirError)  # exit 2
    with pytest.raises(FileNotFoundError, match="no usable checkpoint"):  # the evaluation binary: exit 2
        _variables(copy)


def test_training_resumes_from_the_newest_good_step_and_redoes_the_rest_bitwise(copy, trained, caplog):
    _flip_low_bits(_largest_array_file(_step_dir(copy, 10)))
    with caplog.at_level(logging.INFO):
        _train(copy, ARGS)
    assert "Checkpoint step 10" in caplog.text and "sha256 mismatch" in caplog.text
    assert f"Resumed from {copy / 'checkpoints'} at step 5" in caplog.text
    assert harness.checkpoint_steps(copy) == [5, 10]
    assert checkpoint_integrity.verify(_step_dir(copy, 10)) is None
    assert [p.name.split("_")[0] for p in (copy / "corrupt_checkpoints").iterdir()] == ["10"]
    redone, _ = _variables(copy)
    reference, _ = _variables(trained)
    jax.tree.map(np.testing.assert_array_equal, redone, reference)


def test_readers_never_delete_a_save_in_progress_nor_create_directories(copy, tmp_path):
    in_progress = copy / "checkpoints" / "15.orbax-checkpoint-tmp-1796184809"
    (in_progress / "state").mkdir(parents=True)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    _, step = _variables(copy)
    assert step == 10 and in_progress.is_dir()
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before

    missing = tmp_path / "missing_run"
    with pytest.raises(FileNotFoundError, match="train first"):
        _variables(missing)
    assert not missing.exists()

    missing_source = tmp_path / "missing_source"
    with pytest.raises(config_checks.ConfigError, match="config.init_from"):
        _train(tmp_path / "new_run", "steps=5,ckpt=5", init_from=str(missing_source))
    assert not missing_source.exists()


def test_init_from_reads_another_run_without_touching_it(copy, tmp_path):
    in_progress = copy / "checkpoints" / "15.orbax-checkpoint-tmp-1796184809"
    in_progress.mkdir()
    _train(tmp_path / "new_run", "steps=1,ckpt=5,hidden=1024", init_from=str(copy / "checkpoints"))
    assert in_progress.is_dir()


@pytest.mark.parametrize("host", ["this", "elsewhere", "elsewhere, alive"])
def test_a_held_workdir_lock_refuses_a_second_training(copy, host):
    holder = subprocess.Popen(["sleep", "60"])
    heartbeat = time.time() - 30 if host.endswith("alive") else None
    harness.write_lock(copy, socket.gethostname() if host == "this" else "other-host", holder.pid, heartbeat)
    try:
        with pytest.raises(workdir_lock.WorkdirLockedError) as error:
            _train(copy, "steps=15,ckpt=5,hidden=1024")
    finally:
        holder.kill()
        holder.wait()
    assert "in use by another training run" in str(error.value)
    assert bool(re.search(r"alive \d+ s ago", str(error.value))) == (heartbeat is not None)
    assert f"delete {copy / workdir_lock.LOCK_FILE}" in str(error.value)
    assert harness.checkpoint_steps(copy) == [5, 10]
    assert (copy / workdir_lock.LOCK_FILE).exists()  # the holder's lock stays


@pytest.mark.parametrize("holder", ["dead", "own pid"])  # a restarted container may reuse the pid
def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(copy, caplog, holder):
    dead = subprocess.Popen(["true"])
    dead.wait()
    harness.write_lock(copy, socket.gethostname(), dead.pid if holder == "dead" else os.getpid())
    with caplog.at_level(logging.WARNING):
        _train(copy, ARGS)
    assert "Taking over the stale workdir lock" in caplog.text
    assert not (copy / workdir_lock.LOCK_FILE).exists()


def test_a_lock_whose_heartbeat_stopped_is_taken_over_from_another_host(copy, caplog):
    """A lost machine's lock: its holder may still "run" under the same pid on a new host name; only
    the heartbeat says it is gone."""
    silent = workdir_lock.STALE_AFTER_SECONDS + 60
    harness.write_lock(copy, "lost-host", os.getpid(), heartbeat=time.time() - silent)
    with caplog.at_level(logging.WARNING):
        _train(copy, ARGS)
    stopped = re.search(r"whose heartbeat stopped (\d+) s ago", caplog.text)
    assert stopped and silent <= int(stopped.group(1)) < silent + 120, caplog.text
    assert not (copy / workdir_lock.LOCK_FILE).exists()


def test_nothing_non_finite_is_saved_and_the_message_says_there_is_no_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(trainer.NonFiniteLossError) as error:  # 1e39 passes the config check, is inf in f32
        _train(workdir, "steps=4,ckpt=1,lr=1e39")
    assert "non-finite values in the train state" in str(error.value)
    assert "step range 1..1" in str(error.value) and "no checkpoint yet" in str(error.value)
    assert harness.checkpoint_steps(workdir) == []


def test_after_a_nan_a_lower_learning_rate_resumes_from_the_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    _train(workdir, "steps=5,ckpt=5")
    with pytest.raises(trainer.NonFiniteLossError) as error:
        _train(workdir, "steps=10,ckpt=5,lr=1e39")
    assert "last good checkpoint is step 5" in str(error.value)
    assert "Lower --config.optimizer.learning_rate" in str(error.value)
    assert harness.checkpoint_steps(workdir) == [5]
    _train(workdir, "steps=10,ckpt=5,lr=1e-3")
    assert harness.checkpoint_steps(workdir) == [5, 10]
    assert json.loads((workdir / "config.json").read_text())["optimizer"]["learning_rate"] == 1e-3
    variables, _ = _variables(workdir, "steps=10,ckpt=5")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


@pytest.mark.parametrize("learning_rate", ["1e38", "1e6"])
def test_a_diverged_state_is_never_saved_so_the_printed_advice_works(tmp_path, learning_rate):
    """At 1e38 the parameters after one step are finite but their norm overflows; at 1e6 they are
    ~1e6 times their start. Saved as "good", rerunning with a lower rate resumed them and failed again."""
    workdir = tmp_path / "run"
    with pytest.raises(trainer.NonFiniteLossError) as error:
        _train(workdir, f"steps=6,ckpt=1,lr={learning_rate}")
    assert "diverged parameters" in str(error.value) or "non-finite" in str(error.value)
    assert "last good checkpoint is step 1" in str(error.value)  # warm-up: step 1 does not move
    assert harness.checkpoint_steps(workdir) == [1]
    _train(workdir, "steps=6,ckpt=1,lr=1e-3")  # the printed advice
    assert harness.checkpoint_steps(workdir)[-1] == 6
    variables, _ = _variables(workdir, "steps=6,ckpt=1")
    assert all(np.isfinite(x).all() and np.abs(x).max() < 10 for x in jax.tree.leaves(variables))


def test_num_train_steps_below_the_latest_checkpoint_is_an_error_naming_both(copy):
    with pytest.raises(config_checks.ConfigError) as error:
        _train(copy, "steps=7,ckpt=5,hidden=1024")
    assert "config.num_train_steps=7" in str(error.value) and "step 10" in str(error.value)
    assert harness.checkpoint_steps(copy) == [5, 10]


@pytest.mark.slow
def test_sigint_checkpoints_and_exits_zero_and_a_second_run_is_refused_meanwhile(tmp_path):
    process = harness.start_training(tmp_path, "steps=400,ckpt=1000,delay=0.03")
    harness.wait_for_step(tmp_path, process, 4)
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {process.pid}"):
        _train(tmp_path, "steps=400,ckpt=1000,delay=0.03")
    assert harness.kill(process, signal.SIGINT) == 0, process.stderr.read()[-3000:]
    saved = harness.checkpoint_steps(tmp_path)
    assert len(saved) == 1 and 4 <= saved[0] < 400
    assert max(harness.reporting.read_metrics(tmp_path)) == saved[0]
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_a_checksum_record_that_also_lists_the_files_written_at_commit_still_verifies(tmp_path):
    """Steps hashed after their commit (before the hashing moved into the save) list the step metadata and
    the commit marker too; those files are not checked, the rest are."""
    step = tmp_path / "7"
    (step / "state").mkdir(parents=True)
    (step / "state" / "array").write_bytes(b"weights")
    checkpoint_integrity.write_checksums(step)
    record = json.loads((step / checkpoint_integrity.CHECKSUMS_FILE).read_text())
    for name in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        (step / name).write_text("written at commit")
        record["files"][name] = "0" * 64  # as an older record would hold them
    (step / checkpoint_integrity.CHECKSUMS_FILE).write_text(json.dumps(record))
    assert checkpoint_integrity.verify(step) is None
    (step / "state" / "array").write_bytes(b"weightz")
    assert "changed" in checkpoint_integrity.verify(step)
