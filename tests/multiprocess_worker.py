"""One process of a multi-process run of `train_and_evaluate` on a tiny config (tests/test_multiprocess.py).

    python tests/multiprocess_worker.py ENCODER WORKDIR PARALLEL PHASE PROCESS_ID NUM_PROCESSES PORT [ENTITIES_FROM]

NUM_PROCESSES > 1 joins a CPU cluster at 127.0.0.1:PORT (gloo collectives); the caller sets XLA_FLAGS for the
devices per process. Processes other than 0 run with writes under WORKDIR forbidden (checkpoints aside: orbax
coordinates those), so a file written twice, or by the wrong process, fails the run.
"""
import builtins
import io
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_config  # noqa: E402


def config_for(encoder: str, parallel: str, phase: str, entities_from: str):
    """8 instances per step (1 per device), 4 steps, dev every 2 steps, 3 batch shapes, eval batches of 8."""
    overrides = {"parallel": parallel, "batch_size": 8, "per_device_eval_batch_size": 1, "num_buckets": 3,
                 "max_steps": 4, "eval_every_steps": 2, "data.train_limit": 40, "data.eval_limit": 10}
    if phase == "re":
        overrides["re.entities_from"] = entities_from
    return tiny_config(phase, encoder, **overrides)


def forbid_writes(*roots: Path) -> None:
    """Make opening a file under one of `roots` for writing raise, except under <root>/checkpoints (orbax's)."""
    real_open = io.open

    def guarded(file, mode="r", *args, **kwargs):
        path = Path(file).absolute() if isinstance(file, (str, Path)) else None
        if path is not None and set(mode) & set("wax+") and any(
                path.is_relative_to(r) and not path.is_relative_to(r / "checkpoints") for r in roots):
            raise PermissionError(f"process {jax.process_index()} wrote {path}: only process 0 may write")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded


def main(encoder: str, workdir: str, parallel: str, phase: str, process_id: str, num_processes: str, port: str,
         entities_from: str = "") -> None:
    if int(num_processes) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=int(num_processes), process_id=int(process_id))
    if jax.process_index() != 0:
        forbid_writes(*(Path(d).absolute() for d in (workdir, entities_from) if d))
    from lai_jax import train
    from lai_jax.cli import setup_logging
    setup_logging()
    train.train_and_evaluate(config_for(encoder, parallel, phase, entities_from), workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
