"""One process of a multi-process `python -m lai_jax.main` run, started by tests/test_multiprocess.py.

    python tests/multiprocess_worker.py DIR[,DIR...] [lai_jax.main flags ...]

The caller sets up the environment as launch/slurm.sbatch's srun does on a cluster (SLURM_* variables: one task
per "node", JAX_LOCAL_DEVICE_IDS, and here XLA_FLAGS for 4 CPU devices and gloo collectives), so
`--config.distributed=True` joins the processes through `jax.distributed.initialize()` as on SLURM. Processes
other than 0 may not write files under the DIRs (their checkpoints/ aside, which orbax coordinates): a file
written twice, or by the wrong process, fails the run.
"""
import builtins
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def forbid_writes(roots: list[Path]) -> None:
    """Make opening a file under one of `roots` for writing raise, except under <root>/checkpoints."""
    real_open = io.open

    def guarded(file, mode="r", *args, **kwargs):
        path = Path(file).absolute() if isinstance(file, (str, os.PathLike)) else None
        if path is not None and set(mode) & set("wax+") and any(
                path.is_relative_to(r) and not path.is_relative_to(r / "checkpoints") for r in roots):
            raise PermissionError(f"process {os.environ['SLURM_PROCID']} wrote {path}: only process 0 may write")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded


if __name__ == "__main__":
    if os.environ.get("SLURM_PROCID", "0") != "0":
        forbid_writes([Path(d).absolute() for d in sys.argv[1].split(",") if d])
    from absl import app
    from lai_jax import main
    app.run(main.main, argv=[main.__file__, *sys.argv[2:]])
