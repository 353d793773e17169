"""Benchmarks of lai-jax against a PyTorch reference of the same model (run from the repository root).

    python -m benchmarks.step      # one fixed-shape NER train step (SciERC shapes), lai-jax vs torch
    python -m benchmarks.epoch     # one SciERC NER training epoch: batch shapes vs per-batch dynamic padding
    python -m benchmarks.encoder   # the encoder alone, forward + backward
    python -m benchmarks.g4cn      # the G4CN and its KL adjacency against baselines
    python -m benchmarks.gpu_check # the GPU check: step variants, torch, a short run; one JSON line
    python -m benchmarks.plan      # memory, FLOPs and time per device of a run, compiled here

`timing` holds the shared timing/memory helpers, `workload` the config/model/data setup, `torch_reference` the
torch port of the NER model. Nothing in `lai_jax` imports this package (or torch).
"""
