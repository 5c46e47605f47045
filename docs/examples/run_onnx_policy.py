"""Run a student exported by `rpd export --format onnx` with onnxruntime and numpy alone.

    python run_onnx_policy.py policy.onnx [observations.npz]

observations.npz holds one array per input that policy.onnx.json names (batch first, its
dtype); without it the policy acts once on zeros of the shapes it expects.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

path = sys.argv[1]
meta = json.load(open(path + ".json"))  # inputs, action bounds, task, control mode
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
given = np.load(sys.argv[2]) if len(sys.argv) > 2 else {}
obs = {i["name"]: np.asarray(given[i["name"]] if i["name"] in given
                             else np.zeros([1, *i["shape"][1:]]), dtype=i["dtype"])
       for i in meta["inputs"]}
(action,) = session.run(["action"], obs)  # [batch, action_dim] in the env's units, clipped
print(json.dumps({"task": meta["task"], "control_mode": meta["control_mode"],
                  "action": action.tolist()}))
