"""One of two processes saving best parameters and full states back to back, started by
tests/test_multiprocess.py::test_back_to_back_saves_on_two_processes.

    python tests/checkpoint_saves_worker.py PROCESS PORT ROOT SAVES

Each save pair is what a dev evaluation of `lai_jax.train` does when the score is a new best: params, then the
full state, with a few milliseconds of jitter between processes so one manager's background finalize overlaps
the other's next save.
"""
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    process, port, root, saves = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
    from lai_jax.checkpoints import Checkpoints
    ckpt = Checkpoints(Path(root))
    jitter = random.Random(process)
    for step in range(1, saves + 1):
        tree = {"w": np.full((64, 64), step, np.float32), "step": np.int32(step)}
        ckpt.save_params(step, tree, float(step))
        time.sleep(jitter.random() * 0.02)
        ckpt.save_state(step, tree, float(step), float(step))
    ckpt.close()
    print("saved", saves, flush=True)
