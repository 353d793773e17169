"""lai-jax without torch: every module imports, and the command-line logging setup hides known library noise.

Each test runs a fresh interpreter in which `import torch` raises ImportError (sys.modules["torch"] = None), as on
a machine without torch, whether or not this one has it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

NOISE = ("PyTorch was not found", "Variant folder", "has no dataset_info.json", "Downloading and preparing",
         "downloaded and prepared")


def _run_without_torch(code: str, cwd, *args: str) -> subprocess.CompletedProcess:
    """`python -c code args...` with torch unimportable; fails the test on a non-zero exit."""
    prelude = "import sys\nsys.modules['torch'] = None\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _package_modules() -> set[str]:
    """Module names from the files under lai_jax/ (independent of pkgutil)."""
    names = set()
    for path in (REPO / "lai_jax").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_without_torch(tmp_path):
    code = """
        import importlib, json, pkgutil
        import lai_jax
        imported, failed = [], {}
        for info in pkgutil.walk_packages(lai_jax.__path__, "lai_jax."):
            try:
                importlib.import_module(info.name)
                imported.append(info.name)
            except (Exception, SystemExit) as e:
                failed[info.name] = f"{type(e).__name__}: {e}"
        try:
            import torch
            failed["(check)"] = "torch was importable"
        except ImportError:
            pass
        print(json.dumps({"imported": imported, "failed": failed}))
    """
    proc = _run_without_torch(code, tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}, "modules that cannot be imported without torch: " + "; ".join(
        f"{name} ({error})" for name, error in result["failed"].items())
    assert set(result["imported"]) | {"lai_jax"} == _package_modules()


def test_cli_logging_hides_library_noise(tmp_path):
    """After cli.setup_logging, loading the tokenizer and building a tfds cache print none of the NOISE lines.

    The control run (no setup_logging) shows the transformers and absl lines do appear without it; tfds' stdout
    banners are replaced in the builders themselves, so they are absent from both.
    """
    code = """
        import sys
        if sys.argv[1] == "setup":
            from lai_jax.cli import setup_logging
            setup_logging()
        from lai_jax.pretrained import load_tokenizer
        load_tokenizer("default")
        from lai_jax.data.tfds_builders import load_split
        print("docs", len(load_split("conll04", "dev", data_dir=sys.argv[2])))
    """

    def run(mode: str) -> str:
        proc = _run_without_torch(code, tmp_path, mode, str(tmp_path / mode))
        assert "docs 231" in proc.stdout
        return proc.stdout + proc.stderr

    quiet = run("setup")
    assert [n for n in NOISE if n in quiet] == []
    assert "building the tfds cache of lai_conll04" in quiet  # our own INFO line replaces tfds' banner
    control = run("control")
    assert "PyTorch was not found" in control and "has no dataset_info.json" in control
    assert "Downloading and preparing" not in control
