"""Several processes: 2 processes x 4 CPU devices, joined as launch/slurm.sbatch joins nodes (SLURM variables,
`--config.distributed=True`, gloo collectives), train and evaluate as 1 process x 8 devices does, under pmap and
shard_map, and only process 0 writes files (tests/multiprocess_worker.py forbids the others to)."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, subprocess_xla_flags

# Without the session's compilation cache: these runs compare 1 and 2 processes, each compiling its own programs.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
       "LAI_JAX_COMPILE_CACHE": "off"}
# tests/conftest.py's tiny_config, 8 instances a step (1 per device), 4 steps with dev every 2, two batch shapes,
# eval batches of 8 (several per split); adam_eps damps Adam's amplification of summation-order noise.
CONFIG = """
from tests.conftest import tiny_config

def get_config(phase):
    return tiny_config(phase, {encoder!r}, **{{"batch_size": 8, "per_device_eval_batch_size": 1, "num_buckets": 2,
                       "max_steps": 4, "eval_every_steps": 2, "data.train_limit": 40, "data.eval_limit": 10,
                       "optim.adam_eps": 1e-6}})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_env(process: int, processes: int, devices: int, port: int) -> dict[str, str]:
    """What srun and launch/slurm.sbatch give each task: one task per node, every device of the node."""
    return {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": str(processes),
            "SLURM_PROCID": str(process), "SLURM_LOCALID": "0", "JAX_COORDINATOR_PORT": str(port),
            "JAX_LOCAL_DEVICE_IDS": ",".join(map(str, range(devices)))}


def launch(processes: int, devices: int, flags: list[str], guarded: list[Path], log_prefix: Path,
           timeout: float = 1200) -> None:
    """Run `python -m lai_jax.main FLAGS` as `processes` processes of `devices` CPU devices; fail with their logs."""
    port = free_port()
    procs, logs = [], []
    for i in range(processes):
        env = {**ENV, "XLA_FLAGS": subprocess_xla_flags(f"--xla_force_host_platform_device_count={devices}")}
        extra = []
        if processes > 1:
            env.update(slurm_env(i, processes, devices, port))
            extra = ["--config.distributed=True"]
        logs.append(Path(f"{log_prefix}.p{i}.log"))
        with open(logs[-1], "w") as out:
            procs.append(subprocess.Popen([sys.executable, "tests/multiprocess_worker.py",
                                           ",".join(map(str, guarded)), *flags, *extra],
                                          cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline, failed = time.time() + timeout, None
    while any(p.poll() is None for p in procs) and time.time() < deadline and failed is None:
        failed = next((i for i, p in enumerate(procs) if p.returncode not in (None, 0)), None)
        time.sleep(0.5)
    for p in procs:  # a failed process leaves the others waiting in a collective
        if p.poll() is None:
            p.kill()
            p.wait()
    if any(p.returncode != 0 for p in procs):
        tails = "\n".join(f"--- process {i} (exit {p.returncode}):\n{logs[i].read_text()[-4000:]}"
                          for i, p in enumerate(procs))
        raise AssertionError(f"{processes}-process run of {flags} failed or timed out:\n{tails}")


def test_back_to_back_saves_on_two_processes(tmp_path):
    """A new best saves params then the full state; on several processes each save is a collective, and orbax's
    barrier inside one manager's save met the other's background finalize under one name ("Barrier ... is
    already ongoing", an abort in about half of such runs before each manager got its own barrier names)."""
    import jax
    from lai_jax.checkpoints import KEEP_STATES, Checkpoints
    saves, port, root = 40, free_port(), tmp_path / "checkpoints"
    env = {**ENV, "XLA_FLAGS": subprocess_xla_flags("--xla_force_host_platform_device_count=1")}
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    outs = [open(log, "w") for log in logs]
    procs = [subprocess.Popen([sys.executable, "tests/checkpoint_saves_worker.py", str(i), str(port), str(root),
                               str(saves)], cwd=REPO, env=env, stdout=outs[i], stderr=subprocess.STDOUT)
             for i in range(2)]
    try:
        codes = [p.wait(timeout=120) for p in procs]  # a pass takes about 20 s; the old abort hung first
    finally:
        for p, out in zip(procs, outs):
            p.kill()
            out.close()
    assert codes == [0, 0], "\n".join(f"--- process {i}:\n{log.read_text()[-3000:]}" for i, log in enumerate(logs))
    ckpt = Checkpoints(root, read_only=True)
    assert ckpt.state_steps() == list(range(saves, saves - KEEP_STATES, -1))
    like = {"w": jax.ShapeDtypeStruct((64, 64), np.float32), "step": jax.ShapeDtypeStruct((), np.int32)}
    step, best = ckpt.restore_params(like)
    assert step == saves and int(best["step"]) == saves and float(np.asarray(best["w"]).min()) == saves


def run_phase(config: Path, phase: str, workdir: Path, parallel: str, processes: int, extra=()) -> None:
    flags = [f"--config={config}:{phase}", f"--workdir={workdir}", f"--config.parallel={parallel}", *extra]
    entities_from = [Path(f.partition("=")[2]) for f in extra if f.startswith("--config.re.entities_from=")]
    launch(processes, 8 // processes, flags, [workdir, *entities_from], workdir)


def final_params(workdir: Path) -> tuple[int, dict]:
    """(step, params) of the run's latest checkpoint, restored as saved."""
    from lai_jax.checkpoints import Checkpoints
    ckpt = Checkpoints(workdir / "checkpoints")
    return ckpt.latest_step(), ckpt.restore_latest(None)["params"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_predictions(path_a: Path, path_b: Path) -> None:
    """Same documents, entities and relations; the rounded scores within summation-order noise."""
    a, b = read_jsonl(path_a), read_jsonl(path_b)
    assert [d["doc_key"] for d in a] == [d["doc_key"] for d in b]
    for x, y in zip(a, b):
        assert (x["ner"], x["relations"]) == (y["ner"], y["relations"]), x["doc_key"]
        for sx, sy in zip(x.get("ner_scores", []), y.get("ner_scores", [])):
            np.testing.assert_allclose(sx, sy, atol=2e-4)


@pytest.fixture(scope="module")
def ner_runs(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """NER on 1 process x 8 devices (pmap), and on 2 processes x 4 devices under pmap and under shard_map."""
    root = tmp_path_factory.mktemp("multiprocess")
    config = root / "tiny.py"
    config.write_text(CONFIG.format(encoder=tiny_bert))
    runs = {"one": root / "one_pmap", "pmap": root / "two_pmap", "shard_map": root / "two_shard_map"}
    t0 = time.time()
    for name, workdir in runs.items():
        run_phase(config, "ner", workdir, "pmap" if name == "one" else name, 1 if name == "one" else 2)
        print(f"{name}: {time.time() - t0:.0f}s")
    return {**runs, "config": config}


@pytest.mark.parametrize("parallel", ["pmap", "shard_map"])
def test_two_processes_train_and_score_like_one(ner_runs, parallel):
    import jax
    one, two = ner_runs["one"], ner_runs[parallel]
    (step_one, params_one), (step_two, params_two) = final_params(one), final_params(two)
    assert step_one == step_two == 4
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two))]
    moved = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree.leaves(params_one))
    print(f"{parallel}: max |param difference| {max(diffs):.2e}")
    assert moved > 0 and max(diffs) < 1e-5
    res_one, res_two = (json.loads((w / "results.json").read_text()) for w in (one, two))
    assert res_two["best_step"] == res_one["best_step"]
    assert res_two["dev"] == res_one["dev"] and res_two["test"] == res_one["test"]
    assert res_two["test"]["ner"]["micro"]["n_gold"] > 0
    # Every process ran all dev evaluations, and process 0 logged each step once.
    logged = [(r["step"], "loss" in r) for r in read_jsonl(two / "metrics.jsonl") if "step" in r]  # not hparams
    assert logged == [(1, True), (2, True), (2, False), (3, True), (4, True), (4, False)]
    assert len(json.loads((two / "shapes.json").read_text())["shapes"]) > 1
    for split in ("dev", "test"):
        assert_same_predictions(one / "predictions" / f"{split}.jsonl", two / "predictions" / f"{split}.jsonl")


def test_re_on_two_processes_rewrites_missing_ner_predictions(ner_runs):
    """RE from a NER run whose test predictions are missing: all processes score the NER run's best checkpoint
    together (`evaluate.ensure_predictions`), process 0 writes the file, the others wait for it; the RE encoder
    starts from the NER checkpoint (`re.init_from_ner`) on every process."""
    ner = ner_runs["shard_map"]
    (ner / "predictions" / "test.jsonl").unlink()
    (ner / "predictions" / "test.settings.json").unlink()
    run_phase(ner_runs["config"], "re", ner.parent / "two_shard_map_re", "shard_map", 2,
              [f"--config.re.entities_from={ner}", "--config.max_steps=2"])
    assert_same_predictions(ner_runs["one"] / "predictions" / "test.jsonl", ner / "predictions" / "test.jsonl")
    results = json.loads((ner.parent / "two_shard_map_re" / "results.json").read_text())
    assert results["steps"] == 2 and results["test"]["re"]["micro"]["n_gold"] > 0
