"""lai-jax: LAI-Net (label-annotation interaction for joint entity and relation extraction) in JAX/Flax."""

__version__ = "0.1.0"
