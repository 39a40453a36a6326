"""The tokenizer experiment's config validation and compile-only mode through the real binary (its tiny run,
single- and multi-process, is in test_multiprocess.py)."""

import pytest

from tests import training_harness as harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    return {"TFDS_DATA_DIR": str(tmp_path_factory.mktemp("tfds"))}


@pytest.mark.parametrize(
    "config_args, flags, expected",
    [
        ("tiny,quantizer=bogus", (), "quantizer"),
        ("tiny,arm=vib,quantizer=fsq", (), "config.infotok.estimator"),
        ("tiny", ("--config.infotok.beta=-1",), "config.infotok.beta"),
        ("tiny,batch=6", (), "config.data.global_batch_size"),
    ],
)
def test_invalid_tokenizer_config_fails_before_the_first_step(
    tmp_path, data_env, config_args, flags, expected
):
    workdir = tmp_path / "run"
    result = harness.run_training(
        workdir,
        config_args,
        devices=4,
        config=harness.TOKENIZER_CONFIG,
        extra_flags=flags,
        extra_env=data_env,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in result.stderr
    assert not workdir.exists()


def test_compile_only_prints_memory_and_reads_no_data(tmp_path):
    data_dir = tmp_path / "tfds"
    result = harness.run_training(
        tmp_path / "run",
        "tiny",
        devices=2,
        config=harness.TOKENIZER_CONFIG,
        extra_flags=("--compile_only",),
        extra_env={"TFDS_DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "memory_analysis()" in result.stdout and "temp_size_in_bytes" in result.stdout
    assert harness.checkpoint_steps(tmp_path / "run") == []
    assert not data_dir.exists()
