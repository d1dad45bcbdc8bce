"""Every notebook in notebooks/ runs top to bottom, in quick mode, on this checkout's code.

Each notebook is executed with nbclient in a fresh kernel whose Python is the one running the tests (a kernelspec
written to a temporary JUPYTER_PATH, so no kernel installed elsewhere on the machine is picked up), with
KERAS_EFF_NOTEBOOK_QUICK=1 (the notebooks turn their sizes down), this checkout first on PYTHONPATH, and the working
directory a temporary folder (artifacts land there, not in the repository). The executed notebook is not written
back. New notebooks are picked up by the glob.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, monkeypatch_module):
    """A "python3" kernelspec for sys.executable, first on JUPYTER_PATH, and the environment the kernel inherits."""
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "keras-eff tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch_module.setenv("JUPYTER_PATH", str(spec_dir.parents[1]))
    monkeypatch_module.setenv("KERAS_EFF_NOTEBOOK_QUICK", "1")
    monkeypatch_module.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    path = os.environ.get("PYTHONPATH")
    monkeypatch_module.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *([path] if path else [])]))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell and its traceback when a cell fails
    seconds = time.perf_counter() - t0
    print(f"{path.name}: {seconds:.0f} s in quick mode")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "KERAS_EFF_NOTEBOOK_QUICK" in code[0].source, (
        f"{path.name}: the first code cell must read KERAS_EFF_NOTEBOOK_QUICK"
    )
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: a cell reported an error: {errors[0].get('ename')}"
    shown = [
        o
        for c in code
        for o in c.get("outputs", [])
        if o.get("output_type") in ("display_data", "execute_result")
        and {"image/png", "text/markdown"} & set(o.get("data", {}))
    ]
    assert shown, f"{path.name}: shows no table (markdown) or plot (png)"
