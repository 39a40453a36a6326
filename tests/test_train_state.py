"""The train step's sharding: activation constraints bind only inside `sharding.logical_sharding`."""

import importlib.util
import re

import jax

from infotok_jax import sharding, tasks
from infotok_jax.training import train_state
from tests.training_harness import TOKENIZER_CONFIG


def _tiny_tokenizer_config():
    spec = importlib.util.spec_from_file_location("tokenizer_config", TOKENIZER_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.mesh_shape = (4, 1, 2)
    return config


def _constraints(text: str) -> int:
    return len(re.findall(r"sharding_constraint|custom_call @Sharding", text))


def test_activation_constraints_bind_inside_logical_sharding():
    config = _tiny_tokenizer_config()
    task = tasks.build_task(config)
    mesh = sharding.make_mesh(config.mesh_shape, jax.devices()[:8])
    setup = train_state.setup(task, config, mesh)
    outside = setup.train_step.lower(setup.abstract_state, setup.abstract_batch).as_text()
    with sharding.logical_sharding(mesh):
        inside = setup.train_step.lower(setup.abstract_state, setup.abstract_batch).as_text()
    assert _constraints(outside) == 0
    assert _constraints(inside) >= 4  # encoder input, latents, ... (see tokenizer/model.py)


def test_state_shardings_follow_the_logical_rules():
    config = _tiny_tokenizer_config()
    task = tasks.build_task(config)
    mesh = sharding.make_mesh(config.mesh_shape, jax.devices()[:8])
    setup = train_state.setup(task, config, mesh)
    specs = [s.spec for s in jax.tree.leaves(setup.state_shardings.params)]
    assert any("model" in str(spec) for spec in specs)  # conv_out / mlp kernels split over "model"
    assert all(leaf.sharding is not None for leaf in jax.tree.leaves(setup.abstract_state))
