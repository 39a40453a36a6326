"""Every ```python block of docs/infotok.md runs (blocks share one namespace, in order)."""

import pathlib
import re
import runpy

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "infotok.md"


def test_infotok_docs_examples_run(tmp_path, capsys):
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3, "docs/infotok.md lost its examples"
    assert text.index("```python") < text.index("## What the paper says"), "the page opens with the code"
    script = tmp_path / "infotok_doc_examples.py"
    script.write_text("\n\n".join(blocks))
    namespace = runpy.run_path(str(script), run_name="__doc_examples__")
    printed = capsys.readouterr().out
    assert "['compression', 'consistency']" in printed
    assert "z_view must be one of ('pooled', 'flat'); got 'mean'" in printed
    assert set(namespace["terms"]) == {"consistency", "rate"}
    assert float(namespace["warmed_up"]) == 0.25 * float(namespace["ib"])
