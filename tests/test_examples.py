"""The examples under examples/ run, and InfoTok moves what each says it moves (held-out Fashion-MNIST).

Each example trains its tokenizer without and with InfoTok (300 steps, same init and batches) and
returns its printed table; these tests assert the direction of the change.
"""

import pathlib
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _run(name, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    rows = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")["main"]()
    printed = capsys.readouterr().out
    assert "without InfoTok" in printed and "with InfoTok" in printed
    return rows["without InfoTok"], rows["with InfoTok"]


@pytest.mark.parametrize("name", ["flax_linen_vq", "flax_nnx_vq"])
def test_vq_examples_raise_caption_dependence_and_the_probe(name, monkeypatch, capsys):
    without, with_ = _run(name, monkeypatch, capsys)
    assert with_["nHSIC(Z,T)"] > 1.1 * without["nHSIC(Z,T)"]
    assert with_["probe accuracy"] > without["probe accuracy"]


def test_equinox_gaussian_example_cuts_the_rate(monkeypatch, capsys):
    without, with_ = _run("equinox_gaussian", monkeypatch, capsys)
    assert with_["rate bits/token"] < 0.5 * without["rate bits/token"]
    assert with_["probe accuracy"] > without["probe accuracy"]
