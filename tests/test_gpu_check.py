"""The GPU check works before a GPU comes: its --smoke run, and the GPU image + .whl/ wheels are enough for it.

"The image" is an environment built here without installing anything: a folder of links to the installed
packages of the image's rows in launch/gpu_image.txt and everything they depend on (their distributions'
requirements, extras followed, from this machine's metadata), plus the list's "wheel" rows; Python runs with -S
(no site-packages) and that folder and the repository on PYTHONPATH. What the list misses cannot be imported
there, as on the GPU machine. The wheels themselves (launch/gpu_wheels.sh) need PyPI, so the rows' modules are
taken from this machine's installs of the same distributions.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO, subprocess_xla_flags

IMAGE_LIST = REPO / "launch" / "gpu_image.txt"
# What the check imports (gpu_check.sh runs benchmarks.gpu_check; the rest it reaches, some lazily).
CHECK_MODULES = ("benchmarks.gpu_check", "benchmarks.step", "benchmarks.workload", "benchmarks.timing",
                 "benchmarks.plan", "benchmarks.torch_reference", "lai_jax.train", "lai_jax.build",
                 "lai_jax.input_pipeline", "lai_jax.evaluation", "lai_jax.config_base", "lai_jax.encoder",
                 "transformers.models.bert.modeling_bert")


def list_rows(kind: str) -> list[tuple[str, str]]:
    """(requirement, import name) of the `kind` rows ("image" or "wheel") of launch/gpu_image.txt."""
    rows = []
    for line in IMAGE_LIST.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == kind:
            rows.append((fields[1], fields[2]))
    return rows


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(requirements: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions of `requirements` and of everything they require (markers and extras applied)."""
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r).name, extra) for r in requirements for extra in ("", *Requirement(r).extras)]
    roots = {_canonical(Requirement(r).name) for r in requirements}
    while todo:
        name, extra = todo.pop()
        if (_canonical(name), extra) in seen:
            continue
        seen.add((_canonical(name), extra))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            assert _canonical(name) not in roots, f"{name} (launch/gpu_image.txt) is not installed here"
            continue  # an optional or other-platform dependency
        found[_canonical(name)] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, e) for e in ("", *req.extras)]
    return found


def link_environment(folder: Path, dists: dict[str, md.Distribution]) -> Path:
    """`folder` holding links to each distribution's top-level modules and its .dist-info (for importlib.metadata)."""
    folder.mkdir()
    for dist in dists.values():
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__", "bin")}:
            link, target = folder / top, Path(dist.locate_file(top))
            if target.exists() and not link.exists():
                link.symlink_to(target)
    return folder


def image_env(tmp: Path, with_wheels: bool = True) -> dict[str, str]:
    """Environment variables of a Python that sees only the image's packages (+ the wheel rows)."""
    requirements = [r for r, _ in list_rows("image")] + ([r for r, _ in list_rows("wheel")] if with_wheels else [])
    site = link_environment(tmp / ("image+wheels" if with_wheels else "image"), distributions(requirements))
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "PYTHON": f"{sys.executable} -S",
            "XLA_FLAGS": subprocess_xla_flags()}


def run_in(env: dict[str, str], code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return image_env(tmp_path_factory.mktemp("gpu_image"))


def test_wheel_rows_suffice_to_import_the_check(env, tmp_path):
    code = f"""
        import importlib, json, sys
        for name in {CHECK_MODULES!r}:
            importlib.import_module(name)
        absent = []
        for name in ("tensorflow_datasets", "lai_jax.data.tfds_builders", "array_record"):
            try:
                importlib.import_module(name)
            except ImportError:
                absent.append(name)
        print(json.dumps({{"absent": absent, "loaded": sorted({{m.partition(".")[0] for m in sys.modules}})}}))
    """
    proc = run_in(env, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The environment really is the image: tensorflow-datasets, which this machine has, is not in it.
    assert result["absent"] == ["tensorflow_datasets", "lai_jax.data.tfds_builders", "array_record"]
    assert {"ml_collections", "jax", "torch", "transformers"} <= set(result["loaded"])


def test_without_the_wheels_the_check_cannot_import(tmp_path):
    proc = run_in(image_env(tmp_path, with_wheels=False), "import benchmarks.gpu_check, lai_jax.train", tmp_path)
    assert proc.returncode != 0 and "No module named 'ml_collections'" in proc.stderr


def test_smoke_runs_in_the_image(env, tmp_path):
    """gpu_check.sh --smoke in the image environment: one JSON line with every part measured, nothing failed."""
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--budget-s", "900",
                           "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=1000,
                          env={**env, "GPU_CHECK_TIMEOUT_S": "950"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[-2000:]
    result = json.loads(lines[0])
    assert result == json.loads(out.read_text())
    assert result["check"] == "smoke" and result["errors"] == {} and not result["timed_out"]
    assert result["encoder"] == "random:tiny" and result["K"] == 8 and result["T"] <= 64
    variants = result["jax_steps"]
    assert set(variants) == {"bfloat16/attention_dropout=0", "float32/attention_dropout=0.1"}  # SMOKE_VARIANTS
    for v in variants.values():
        assert v["steps_per_s"] > 0 and v["compile_s"] > 0 and v["xla_gflop_per_step"] > 0
        assert v["attention"] == "xla" and v["why_not_fused"] == "backend cpu" and v["mfu"] is None
    assert result["peak_flops"] is None and "MFU not computed" in result["peak"]
    torch_side = result["torch"]
    assert torch_side["autocast"] == "bfloat16" and torch_side["steps_per_s"] > 0
    assert result["ratio"] == pytest.approx(variants["bfloat16/attention_dropout=0"]["steps_per_s"]
                                            / torch_side["steps_per_s"], rel=1e-2, abs=1e-3)
    run = result["train_and_evaluate"]
    assert run["steps"] == 2 and run["compiles"]["train"] >= 1 and run["fields"]["data.use_tfds"] is False
    assert 0.0 <= run["dev_f1"] <= 1.0
