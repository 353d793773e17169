"""Data: the Document type, readers for PURE/SpERT JSON, label inventories.

The tfds builders live in :mod:`lai_jax.data.tfds_builders`; they are not imported here because
importing tensorflow_datasets is slow and only `data.use_tfds=True` needs it (`input_pipeline.load_docs`).
"""
from lai_jax.data.documents import DataError, Document, Entity, Relation, Sentence
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.data.readers import read_documents, read_pure, read_spert

__all__ = ["DataError", "Document", "Entity", "Relation", "Sentence", "LabelSet", "load_labels",
           "read_documents", "read_pure", "read_spert"]
