"""The evaluation binary scores a run also at another nuisance strength on request
(`config.evaluation.shift_nuisance`): the test split's same scenes rendered with a stronger background
field, as the column `test_nuisance<level>`, beside the unshifted splits."""

import json
import pathlib

import pytest

from infotok_jax import tasks
from infotok_jax.evaluate import checkpoint_eval
from infotok_jax.training import trainer
from infotok_jax.training.config_checks import ConfigError
from tests import training_harness

HOST = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / "host.py"

pytestmark = pytest.mark.slow  # scheduled early, together: the module fixture trains a run once


def _config(*overrides: str):
    return training_harness.load_config(pathlib.Path(f"{HOST}:host=ar,tiny"), *overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = _config()
    workdir = tmp_path_factory.mktemp("shift_run")
    trainer.train_and_evaluate(config, tasks.build_task(config), workdir)
    return workdir


def test_shift_scores_the_test_split_again_at_the_shifted_nuisance(trained):
    config = _config("--config.evaluation.shift_nuisance=1.0")
    assert config.data.nuisance == 0.5  # trained at the default, scored also at 1.0
    outcome = checkpoint_eval.evaluate_checkpoint(config, tasks.build_task(config), trained, max_batches=1)
    column = checkpoint_eval.shift_column(1.0)
    assert column == "test_nuisance1" and set(outcome["results"]) == {"validation", "test", "holdout", column}
    scores = json.loads(pathlib.Path(outcome["paths"]["json"]).read_text())
    for section in ("understanding/accuracy", "generation/all_correct", "reconstruction/psnr"):
        assert scores[f"{column}/{section}"] is not None
    n = scores["test/understanding/num_examples"]
    assert scores[f"{column}/understanding/num_examples"] == n > 0
    # the same prompts, other pixels: the shifted images reconstruct differently
    assert scores[f"{column}/reconstruction/mse"] != scores["test/reconstruction/mse"]


def test_a_shift_outside_0_1_is_refused_naming_the_field(trained):
    config = _config("--config.evaluation.shift_nuisance=1.5")
    with pytest.raises(ConfigError, match="evaluation.shift_nuisance=1.5"):
        checkpoint_eval.evaluate_checkpoint(config, tasks.build_task(config), trained, max_batches=1)
