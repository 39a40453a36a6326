"""Each MLLM host trains through the real binary (tiny mode) and the evaluation binary scores it."""

import json
import subprocess
import sys

import pytest

from tests import training_harness as harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    return {"TFDS_DATA_DIR": str(tmp_path_factory.mktemp("tfds"))}


@pytest.mark.parametrize("host", ["ar", "masked", "continuous"])
def test_tiny_host_trains_and_evaluates(tmp_path, data_env, host):
    config_args = f"tiny,host={host},arm={'vib' if host == 'continuous' else 'hsic'}"
    result = harness.run_training(
        tmp_path, config_args, devices=2, config=harness.HOST_CONFIG, extra_env=data_env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert harness.checkpoint_steps(tmp_path) == [2, 4]
    metrics = harness.reporting.read_metrics(tmp_path)
    for key in ("loss", "loss/understanding", "loss/generation", "eval/psnr", "eval/nhsic_xz"):
        assert key in metrics[4], key
    assert (tmp_path / "images" / "generations_step000004.png").exists()

    evaluation = subprocess.run(
        [
            sys.executable,
            "-m",
            "infotok_jax.evaluate",
            f"--config={harness.HOST_CONFIG}:{config_args}",
            f"--workdir={tmp_path}",
        ],
        env={**harness.env_for(2), **data_env},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=harness.REPO,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-4000:]
    assert "understanding accuracy" in evaluation.stdout and "generation all_correct" in evaluation.stdout
    out_dir = tmp_path / "eval" / "step_000004"
    results = json.loads((out_dir / "metrics.json").read_text())
    for split in ("validation", "holdout"):
        assert 0.0 <= results[f"{split}/understanding/accuracy"] <= 1.0
        assert results[f"{split}/understanding/num_examples"] == 8
        assert 0.0 < results[f"{split}/understanding/chance_accuracy"] < 1.0
        assert 0.0 <= results[f"{split}/generation/all_correct"] <= 1.0
        assert results[f"{split}/generation/num_prompts"] == 8
        assert results[f"{split}/reconstruction/psnr"] > 0
        assert (out_dir / f"{split}_generation.png").exists() and (out_dir / f"{split}_qa.png").exists()


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
