"""Fails unless a `pip install --dry-run --report` installs exactly one distribution of the `tensorflow`
import name (tensorflow, tensorflow-cpu, tensorflow-intel... share it and break each other)."""

import json
import sys

names = [
    item["metadata"]["name"].lower().replace("_", "-") for item in json.load(open(sys.argv[1]))["install"]
]
providers = sorted(
    n for n in names if n in ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly")
)
cuda = [n for n in names if n.startswith("nvidia-cudnn")]
if len(providers) != 1 or not cuda:
    sys.exit(
        f"the gpu extra resolves to {providers or 'no TensorFlow'} (cuDNN: {cuda or 'missing'}): want one TensorFlow with CUDA"
    )
print(f"gpu extra: {providers[0]} with {len([n for n in names if n.startswith('nvidia-')])} CUDA packages")
