"""`import keras_eff` is lazy (no TensorFlow until a name is used), yet a `.keras` file holding keras-eff's classes
loads with no custom_objects whatever the import order. Each order runs in a fresh subprocess."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A quantized and a pruned tiny model, saved: both hold keras-eff classes (wrappers, quantizers, schedules)."""
    import keras

    import keras_eff as ke

    d = tmp_path_factory.mktemp("lazy")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="dense")(keras.layers.Flatten()(x)))
    ke.quantize_model(model).save(d / "qat.keras")
    ke.prune_model(model, ke.ConstantSparsity(0.5, begin_step=0), min_weights=1).save(d / "pruned.keras")
    return d


_LOAD = """
    import keras
    for name in ("qat", "pruned"):
        m = keras.saving.load_model(r"{d}/" + name + ".keras")
        print(name, type(m.layers[1]).__module__)
"""

ORDERS = {
    "keras_eff, then keras": "import keras_eff\nimport keras\n",
    "keras, then keras_eff": "import keras\nimport keras_eff\n",
    "keras_eff, then tensorflow": "import keras_eff\nimport tensorflow\n",
    "a keras_eff submodule first": "import keras_eff.quantization.quantizers\n",
    "keras_eff, then tflite_export's converter": "import keras_eff\nimport tflite_export.convert\n",
}


def test_models_with_keras_eff_classes_load_whatever_the_import_order(saved):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {
        order: subprocess.Popen(
            [sys.executable, "-c", code + textwrap.dedent(_LOAD).format(d=saved)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for order, code in ORDERS.items()
    }  # in parallel: each spends seconds importing TensorFlow
    for order, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{order}: {err[-3000:]}"
        lines = out.split()
        assert lines[0::2] == ["qat", "pruned"] and all(m.startswith("keras_eff.") for m in lines[1::2]), order


def test_import_keras_eff_loads_no_tensorflow_until_a_name_is_used():
    done = _python("""
        import sys
        import keras_eff as ke
        print("tensorflow" in sys.modules, "keras" in sys.modules)
        assert "quantize_model" in dir(ke) and "strip" in ke.__all__
        f = ke.quantize_model
        print("tensorflow" in sys.modules, callable(ke.strip), type(ke.strip).__name__, ke.__version__)
        import keras_eff.strip as strip_module
        print(type(ke.strip).__name__, type(strip_module).__name__)
        try:
            ke.no_such_name
        except AttributeError as err:
            print("AttributeError", "no_such_name" in str(err))
    """)
    assert done.stdout.split("\n")[:4] == [
        "False False",
        "True True function 0.1.0",
        "function function",
        "AttributeError True",
    ]


def test_the_registering_modules_are_all_the_modules_that_register_keras_classes():
    """Importing keras_eff and keras registers exactly what importing every module of keras_eff registers."""
    code = """
        import importlib, pkgutil
        import keras_eff, keras

        def ours():
            return sorted(k for k, v in keras.saving.get_custom_objects().items()
                          if getattr(v, "__module__", "").startswith("keras_eff"))

        print(ours())
        for info in pkgutil.walk_packages(keras_eff.__path__, "keras_eff."):
            if not info.name.startswith("keras_eff.cli"):
                importlib.import_module(info.name)
        print(ours())
    """
    first, every = _python(code).stdout.strip().split("\n")[-2:]
    assert first == every and "keras_eff>QuantizeWrapper" in first
