"""A child process that runs the TFLite Micro Python interpreter on behalf of tflite_export.micro.

Run as a script (``python _micro_worker.py MODEL_PATH``), never imported: it needs only numpy and tflite-micro, and a
too-small tensor arena can crash TFLite Micro with a segmentation fault, which must not take the caller down.

It reads one JSON request a line from stdin and answers one JSON line on stdout:
  {"op": "try", "arena": N}                      -> {"ok": bool, "error": str}: build with an N-byte arena, invoke once
  {"op": "run", "arena": N, "inputs": P, "outputs": Q} -> runs every sample of the .npz at P, writes outputs to Q
  {"op": "opcode", "code": C}                    -> {"registered": bool}: is builtin op C in the interpreter's resolver
TFLite Micro's own messages go to stderr, which the parent reads.
"""

import json
import sys

import flatbuffers
import numpy as np
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema


def _num_io(schema, model_bytes):
    graph = schema.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0)
    return graph.InputsLength(), graph.OutputsLength()


def _zeros_inputs(interpreter, n_inputs):
    out = []
    for i in range(n_inputs):
        d = interpreter.get_input_details(i)
        out.append(np.zeros(tuple(int(s) for s in d["shape"]), dtype=d["dtype"]))
    return out


def _try(runtime, schema, model_bytes, arena):
    n_in, _ = _num_io(schema, model_bytes)
    try:
        interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena))
        for i, x in enumerate(_zeros_inputs(interpreter, n_in)):
            interpreter.set_input(x, i)
        interpreter.invoke()
    except Exception as err:  # noqa: BLE001 - TFLite Micro reports any failure; the answer is "does not run"
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}
    return {"ok": True}


def _run(runtime, schema, model_bytes, arena, inputs_path, outputs_path):
    n_in, n_out = _num_io(schema, model_bytes)
    with np.load(inputs_path, allow_pickle=False) as f:
        xs = [f[f"x{i}"] for i in range(n_in)]
    try:
        interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena))
        outs = [[] for _ in range(n_out)]
        for s in range(len(xs[0])):
            for i, x in enumerate(xs):
                interpreter.set_input(np.ascontiguousarray(x[s : s + 1]), i)
            interpreter.invoke()
            for k in range(n_out):
                outs[k].append(np.array(interpreter.get_output(k)))
    except Exception as err:  # noqa: BLE001 - any failure is reported to the parent process as the run's error
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}
    np.savez(outputs_path, **{f"y{k}": np.concatenate(o) for k, o in enumerate(outs)})
    return {"ok": True}


def _opcode_registered(runtime, schema, model_bytes, code):
    """Rewrites every op of the model to builtin ``code`` and asks TFLite Micro to load it.

    The interpreter looks each op up in its op resolver before anything else; a missing op is reported as
    "Failed to get registration" or "Didn't find op". Any other outcome (loads, fails in Prepare on the wrong
    tensors, even crashes) means the op is registered.
    """
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    for oc in model.operatorCodes:
        oc.builtinCode = int(code)
        oc.deprecatedBuiltinCode = min(int(code), 127)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    patched = bytes(builder.Output())
    try:
        runtime.Interpreter.from_bytes(patched, arena_size=1 << 20)
    except Exception:  # noqa: BLE001 - only a crash or "not registered" matters; any other failure means registered
        pass
    return {"done": True}


def main():
    with open(sys.argv[1], "rb") as f:
        model_bytes = f.read()
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "try":
            reply = _try(runtime, schema, model_bytes, req["arena"])
        elif req["op"] == "run":
            reply = _run(runtime, schema, model_bytes, req["arena"], req["inputs"], req["outputs"])
        elif req["op"] == "opcode":
            reply = _opcode_registered(runtime, schema, model_bytes, req["code"])
        else:
            reply = {"ok": False, "error": f"unknown request {req['op']!r}"}
        sys.stderr.flush()
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
