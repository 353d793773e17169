# Sourced by launch/multi_gpu.sh and launch/slurm.sbatch: the same XLA settings for every GPU run. The compute
# dtype needs no flag: model.dtype=auto is bfloat16 on GPUs (float32 parameters and optimiser state).
# The latency-hiding scheduler overlaps the gradient all-reduce over the GPUs with the rest of the backward pass.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
# XLA_PYTHON_CLIENT_PREALLOCATE is left at JAX's default (preallocate 75% of each GPU): every phase is one
# process that owns its GPUs (ner_re.sh runs NER, then RE; SLURM allocates whole GPUs), and one preallocated
# pool avoids the fragmentation and allocation stalls of growing on demand. To share a GPU with another job,
# cap it instead, e.g. XLA_PYTHON_CLIENT_MEM_FRACTION=0.45.
