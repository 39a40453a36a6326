"""Host config errors through the real binary. Each host's tiny run through the training and evaluation
binaries, single- and multi-process, is in test_multiprocess.py."""

import pytest

from tests import training_harness as harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    return {"TFDS_DATA_DIR": str(tmp_path_factory.mktemp("tfds"))}


def test_host_config_errors_name_the_field(tmp_path, data_env):
    result = harness.run_training(
        tmp_path / "run",
        "tiny,host=masked",
        config=harness.HOST_CONFIG,
        extra_flags=("--config.host.tokenizer.quantizer=gaussian",),
        extra_env=data_env,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "quantizer" in result.stderr
    assert not (tmp_path / "run").exists()
