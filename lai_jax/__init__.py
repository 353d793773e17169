"""lai-jax: LAI-Net (label-annotation interaction for joint entity and relation extraction) in JAX/Flax."""

__version__ = "0.1.0"
__all__ = ["Extractor"]


def __getattr__(name: str):
    # Lazy: `import lai_jax` (e.g. for a config file) must not pull in JAX and the models.
    if name == "Extractor":
        from lai_jax.extractor import Extractor
        return Extractor
    raise AttributeError(f"module 'lai_jax' has no attribute {name!r}")
