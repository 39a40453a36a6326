"""Every ```python block of docs/estimators.md runs (blocks share one namespace, in order)."""

import pathlib
import re
import runpy

import pytest

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "estimators.md"


@pytest.mark.slow
def test_estimator_docs_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5, "docs/estimators.md lost its examples"
    script = tmp_path / "estimators_doc_examples.py"
    script.write_text("\n\n".join(blocks))
    namespace = runpy.run_path(str(script), run_name="__doc_examples__")
    assert "hsic" in namespace  # the examples import the public API
