"""Tensor exchange with the TypeScript tests: raw little-endian files plus JSON entries
{"file": name, "shape": [...], "dtype": "f32" | "u8"} inside one working directory."""

import json
import os

import numpy as np

_DTYPES = {"f32": "<f4", "u8": "u1"}


def load(directory, entry):
    data = np.fromfile(os.path.join(directory, entry["file"]), dtype=_DTYPES[entry.get("dtype", "f32")])
    return data.reshape(entry["shape"])


def save(directory, name, array, dtype="f32"):
    array = np.ascontiguousarray(np.asarray(array), dtype=_DTYPES[dtype])
    path = os.path.join(directory, name + "." + dtype)
    array.tofile(path)
    return {"file": os.path.basename(path), "shape": list(array.shape), "dtype": dtype}


def read_json(directory, name):
    with open(os.path.join(directory, name)) as f:
        return json.load(f)


def write_json(directory, name, value):
    with open(os.path.join(directory, name), "w") as f:
        json.dump(value, f, indent=1)
