"""Experiment configs: one source per shared value (field references that survive `--config.` overrides),
and the supervised control arm's heads existing only in that arm's parameter tree."""

import pathlib

import flax.linen as nn
import jax
import pytest

from infotok_jax import tasks
from infotok_jax.training.config_checks import ConfigError
from tests import training_harness

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


def _load(spec: str, *overrides: str):
    return training_harness.load_config(CONFIGS / spec, *overrides)


@pytest.mark.parametrize("spec", ["host.py:tiny", "host.py:host=ar", "base.py:smoke"])
def test_data_overrides_reach_the_host(spec):
    config = _load(
        spec,
        "--config.data.caption_length=20",
        "--config.data.question_length=12",
        "--config.data.answer_length=6",
        "--config.data.text_vocab_size=96",
    )
    host = config.host
    assert (host.max_caption_len, host.max_question_len, host.max_answer_len) == (20, 12, 6)
    assert host.text_vocab_size == 96


def test_image_size_override_keeps_the_token_count():
    default = _load("host.py:tokens=16")
    config = _load("host.py:tokens=16", "--config.data.image_size=64")
    assert config.host.tokenizer.image_size == 64
    assert config.host.tokenizer.patch_size == 2 * default.host.tokenizer.patch_size == 16
    tok = _load("tokenizer.py:tokens=64", "--config.data.image_size=64")
    assert (tok.model.image_size, tok.model.patch_size) == (64, 8)


def test_overriding_the_copy_moves_the_source_too():
    """The host's lengths are the data's fields, not copies: there is no second value to disagree."""
    config = _load("host.py:tiny", "--config.host.max_caption_len=24")
    assert config.data.caption_length == 24


def test_base_config_has_no_scenes_fields_to_overwrite():
    config = _load("base.py:smoke")
    assert config.data.name == "tfds:imagenet2012" and config.data.nuisance == 0.0
    assert config.host.tokenizer.image_size == config.data.image_size == 32


@pytest.mark.parametrize("arm", ["hsic", "supervised"])
def test_controls_params_exist_only_in_the_supervised_arm(arm):
    config = _load(f"tokenizer.py:tiny,arm={arm}")
    task = tasks.build_task(config)
    batch = task.abstract_batch()
    variables = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0), batch))
    assert ("controls" in variables["params"]) == (arm == "supervised")
    hsic_task = tasks.build_task(_load("tokenizer.py:tiny,arm=hsic"))
    model_tree = nn.unbox(jax.eval_shape(hsic_task.init_variables, jax.random.key(0), batch))["params"]
    assert jax.tree.structure(task.model_params(variables["params"])) == jax.tree.structure(model_tree)
    mutable = {k: v for k, v in variables.items() if k != "params"}
    step = jax.ShapeDtypeStruct((), jax.numpy.int32)
    loss, (metrics, _) = jax.eval_shape(
        task.loss, variables["params"], mutable, batch, jax.random.key(1), step
    )
    assert loss.shape == ()
    expected = {"supervised": "infotok/probe_loss", "hsic": "infotok/relevance"}[arm]
    assert expected in metrics


def test_privileged_targets_need_their_field():
    with pytest.raises(ConfigError, match="relevance_target='label'"):
        tasks.build_task(_load("tokenizer.py:tiny", "--config.infotok.relevance_target=label"))
    with pytest.raises(ConfigError, match="relevance_target='attributes'"):
        tasks.build_task(
            _load("tokenizer.py:tiny,dataset=fashion_mnist", "--config.infotok.relevance_target=attributes")
        )
