"""The API reference (`make docs`, pdoc) builds from the Google-style docstrings."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pdoc
import pdoc.render
import pytest

ROOT = Path(__file__).resolve().parents[1]


# pdoc blocks subprocesses while importing (platform.processor() tries `uname -p`) and warns
@pytest.mark.filterwarnings("ignore:Suppressed execution")
def test_pdoc_renders_google_sections(tmp_path):
    pdoc.render.configure(docformat="google")
    try:
        pdoc.pdoc("keras_eff.datasets", output_directory=tmp_path)
    finally:
        pdoc.render.configure()  # pdoc's defaults again, for anything else in this process
    page = tmp_path / "keras_eff" / "datasets.html"
    assert page.is_file(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    html = page.read_text(encoding="utf-8")
    # fashion_mnist's section of the page: from its anchor to the next function's
    start = html.index('id="fashion_mnist"')
    section = html[start : html.index('id="fashion_mnist_float"')]
    # "Args:" became a heading and its entries a list (with pdoc's default format it stays plain text)
    assert re.search(r"<h6[^>]*>Arguments:</h6>", section), section[:2000]
    assert "<strong>data_dir:</strong>" in section
    assert re.search(r"<h6[^>]*>Returns:</h6>", section)


def test_make_docs_runs_pdoc_on_both_packages():
    out = subprocess.run(["make", "-n", "docs"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "pdoc -d google -o site/api keras_eff tflite_export" in out
