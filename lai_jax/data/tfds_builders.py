"""tensorflow-datasets builders for the bundled benchmarks (and ACE05 from a user's own copy).

The builders read the staged files in the repository's ``data/`` folder (or ``$LAI_JAX_DATA``) with
:mod:`lai_jax.data.readers`, so a malformed file fails the build with a :class:`DataError`. Records
are written as ArrayRecord, which tfds can write and read without TensorFlow; features are two
``Text`` fields (``doc_key`` and ``document`` = the PURE JSON of the document) because nested
sequence features would need TF's parsing machinery, and PURE JSON keeps sentence boundaries.

:func:`load_split` is the entry point: it builds once into a cache directory and reads back through
``tfds`` data sources. A build records a fingerprint of its source files (and labels); when those
change, the next :func:`load_split` rebuilds instead of silently serving stale data.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

import tensorflow_datasets as tfds
from etils import epath

from lai_jax.data.documents import DataError, Document
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.data.readers import document_from_pure, read_documents

__all__ = ["Scierc", "Conll04", "Ade", "Ace05", "AdeConfig", "DATASETS", "data_root", "default_tfds_dir",
           "builder_name", "get_builder", "load_split", "dataset_labels"]

# Bump when the record layout (what goes into `document`) changes; part of the fingerprint so that
# caches written by an older layout are rebuilt.
_RECORD_FORMAT = 1
_FINGERPRINT_KEY = "lai_source_sha256"
NUM_ADE_FOLDS = 10
logger = logging.getLogger(__name__)


def data_root() -> Path:
    """The staged data folder: ``$LAI_JAX_DATA`` or ``<repo>/data``."""
    env = os.environ.get("LAI_JAX_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"


def default_tfds_dir() -> Path:
    """Where built datasets are cached: ``$LAI_JAX_TFDS_DIR`` or ``~/.cache/lai_jax/tfds``."""
    env = os.environ.get("LAI_JAX_TFDS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lai_jax" / "tfds"


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256(f"record-format={_RECORD_FORMAT}\n".encode())
    for f in files:
        h.update(f"{f.name}\n".encode())
        h.update(f.read_bytes() if f.is_file() else b"<missing>")
    return h.hexdigest()


class _LaiBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: split -> source file table, labels, validation, serialisation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: doc_key + PURE JSON document per record."}
    DATASET = ""  # key into DATASETS / the data/<DATASET>/ folder

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds' default derives this via `importlib_resources`, which tfds 4.9.10 imports lazily but only
        # declares as a dependency for Python < 3.9, so it fails on 3.11. The module file is the answer.
        return epath.Path(__file__)

    def __init__(self, *, file_format: str | tfds.core.FileFormat = "array_record",
                 labels_path: Optional[str | os.PathLike] = None, **kwargs):
        # The label file the data are validated against (training's config.data.labels); None = the staged one.
        self._labels_file = Path(labels_path).expanduser() if labels_path else None
        # array_record is the one format tfds writes and reads without TensorFlow.
        super().__init__(file_format=file_format, **kwargs)

    # -- per-dataset hooks -------------------------------------------------------------------
    def _source_dir(self, manual_dir: Optional[Path]) -> Path:
        return data_root() / self.DATASET

    def _split_files(self, source_dir: Path) -> dict[str, Path]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def labels_path(self) -> Path:
        # The caller's label file, else the staged folder's (ACE05's labels.json is shipped; its data is not).
        # Part of the fingerprint: a build validated against another label file is rebuilt (and re-validated).
        return self._labels_file or data_root() / self.DATASET / "labels.json"

    def source_files(self, manual_dir: Optional[Path] = None) -> tuple[dict[str, Path], list[Path]]:
        """(split -> file, files whose content defines the build)."""
        splits = self._split_files(self._source_dir(manual_dir))
        return splits, [*splits.values(), self.labels_path()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "doc_key": tfds.features.Text(),
                "document": tfds.features.Text(),  # PURE/DyGIE JSON: document-level, end-inclusive
            }),
            # Keep file order: documents carry context for each other and results must be reproducible.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        # tfds' own accessor: it raises with MANUAL_DOWNLOAD_INSTRUCTIONS when the directory is missing.
        manual_dir = Path(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else None
        splits, files = self.source_files(manual_dir)
        labels = load_labels(self.labels_path())
        # Read and validate every split before writing anything, so a bad file leaves no partial build.
        docs = {split: read_documents(path, labels) for split, path in splits.items()}
        # Written with the dataset info, compared by load_split to detect stale caches.
        self.info.metadata[_FINGERPRINT_KEY] = _fingerprint(files)
        self.info.metadata["lai_source_files"] = {s: str(p) for s, p in splits.items()}
        return {split: self._generate_examples(d) for split, d in docs.items()}

    def _generate_examples(self, docs: list[Document]) -> Iterator[tuple[int, dict]]:
        # Integer keys: with shuffling disabled tfds sorts by key, so this preserves file order.
        for i, doc in enumerate(docs):
            yield i, {"doc_key": doc.doc_key,
                      "document": json.dumps(doc.to_pure(), ensure_ascii=False, separators=(",", ":"))}

    # tfds prints a download-size banner and a "downloaded and prepared" line to stdout around each build
    # (print, not logging, so no log level hides them). These builds read local files: one log line instead.
    def _log_download_bytes(self) -> None:
        logger.info("building the tfds cache of %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        pass


class Scierc(_LaiBuilder):
    """SciERC (Luan et al. 2018), PURE/DyGIE JSONL as released by the authors; splits train/dev/test."""

    name = "lai_scierc"
    DATASET = "scierc"

    def _split_files(self, source_dir: Path) -> dict[str, Path]:
        return {s: source_dir / f"{s}.json" for s in ("train", "dev", "test")}


class Conll04(_LaiBuilder):
    """CoNLL04 (Roth & Yih 2004), SpERT split, one sentence per document; splits train/dev/test."""

    name = "lai_conll04"
    DATASET = "conll04"

    def _split_files(self, source_dir: Path) -> dict[str, Path]:
        return {s: source_dir / f"conll04_{s}.json" for s in ("train", "dev", "test")}


@dataclasses.dataclass(eq=False)
class AdeConfig(tfds.core.BuilderConfig):
    fold: int = 0


class Ade(_LaiBuilder):
    """ADE (Gurulingappa et al. 2012), SpERT's 10-fold split; configs fold0..fold9, splits train/test."""

    name = "lai_ade"
    DATASET = "ade"
    BUILDER_CONFIGS = [AdeConfig(name=f"fold{k}", fold=k, description=f"ADE cross-validation fold {k}")
                       for k in range(NUM_ADE_FOLDS)]

    def _split_files(self, source_dir: Path) -> dict[str, Path]:
        k = self.builder_config.fold
        return {s: source_dir / f"ade_split_{k}_{s}.json" for s in ("train", "test")}


class Ace05(_LaiBuilder):
    """ACE05 in PURE/DyGIE JSONL from a user-provided directory (LDC licence: never shipped)."""

    name = "lai_ace05"
    DATASET = "ace05"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    ACE 2005 (LDC2006T06) is licensed by the Linguistic Data Consortium and cannot be distributed
    with lai-jax. If your institution holds the licence, preprocess the corpus into PURE/DyGIE JSONL
    with the standard DyGIE++ / PURE ACE05 scripts (Wadden et al. 2019; Zhong & Chen 2021) and put
    `train.json`, `dev.json` and `test.json` in one directory. Pass that directory as `manual_dir`
    (lai_jax: `load_split("ace05", ..., manual_dir=DIR)`; tfds: DownloadConfig(manual_dir=DIR)).
    The type annotations come from data/ace05/labels.json.
    """

    def _source_dir(self, manual_dir: Optional[Path]) -> Path:
        if manual_dir is None:
            raise DataError("<manual_dir>", "ace05", "manual_dir",
                            "ACE05 needs manual_dir, a directory with train.json/dev.json/test.json "
                            "(PURE JSONL); see Ace05.MANUAL_DOWNLOAD_INSTRUCTIONS")
        return manual_dir

    def _split_files(self, source_dir: Path) -> dict[str, Path]:
        return {s: source_dir / f"{s}.json" for s in ("train", "dev", "test")}


DATASETS: dict[str, type[_LaiBuilder]] = {"scierc": Scierc, "conll04": Conll04, "ade": Ade, "ace05": Ace05}


def _builder_class(dataset: str) -> type[_LaiBuilder]:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}") from None


def _check_fold(dataset: str, fold: Optional[int]) -> None:
    if dataset == "ade":
        if fold is not None and not (isinstance(fold, int) and 0 <= fold < NUM_ADE_FOLDS):
            raise ValueError(f"ADE fold must be 0..{NUM_ADE_FOLDS - 1}, got {fold!r}")
    elif fold is not None:
        raise ValueError(f"dataset {dataset!r} has no folds (got fold={fold!r})")


def builder_name(dataset: str, fold: Optional[int] = None) -> str:
    """tfds name of a dataset: ``builder_name("scierc", None) == "lai_scierc"``, ``("ade", 3) -> "lai_ade/fold3"``."""
    cls = _builder_class(dataset)
    _check_fold(dataset, fold)
    return cls.name if fold is None else f"{cls.name}/fold{fold}"


def dataset_labels(dataset: str) -> LabelSet:
    """The LabelSet of a dataset (from ``data/<dataset>/labels.json``)."""
    _builder_class(dataset)
    return load_labels(data_root() / dataset / "labels.json")


def get_builder(dataset: str, data_dir: Optional[str | os.PathLike] = None, fold: Optional[int] = 0,
                manual_dir: Optional[str | os.PathLike] = None,
                labels_path: Optional[str | os.PathLike] = None) -> _LaiBuilder:
    """A prepared builder: built on first use, rebuilt when the source files (or the label file) have changed.

    ``labels_path``: the label file every gold type must be in (default: the staged ``<dataset>/labels.json``).
    """
    cls = _builder_class(dataset)
    if dataset != "ade" and fold not in (0, None):
        raise ValueError(f"dataset {dataset!r} has no folds (got fold={fold!r})")
    fold = 0 if fold is None else fold
    _check_fold(dataset, fold if dataset == "ade" else None)
    kwargs: dict = {"config": f"fold{fold}"} if dataset == "ade" else {}
    if labels_path:
        kwargs["labels_path"] = labels_path
    data_dir = os.fspath(data_dir) if data_dir is not None else os.fspath(default_tfds_dir())
    mdir = Path(manual_dir).expanduser() if manual_dir is not None else None
    if mdir is not None and not mdir.is_dir():
        raise DataError(mdir, dataset, "manual_dir", "directory not found")

    # Two runs started together on a fresh machine would both build and race to rename the same folder.
    with _build_lock(Path(data_dir), cls.name):
        builder = cls(data_dir=data_dir, **kwargs)
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.fspath(mdir) if mdir is not None else None,
            # Feature statistics are never used here and would only slow the build down.
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
        )
        if builder.is_prepared():
            stored = builder.info.metadata.get(_FINGERPRINT_KEY) if builder.info.metadata is not None else None
            # ACE05 without manual_dir: the cached build is all there is, so trust it.
            can_check = dataset != "ace05" or mdir is not None
            if can_check and stored != _fingerprint(builder.source_files(mdir)[1]):
                download_config.download_mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
                builder.download_and_prepare(download_config=download_config)
                builder = cls(data_dir=data_dir, **kwargs)  # re-read the new dataset_info from disk
            return builder
        if dataset == "ace05" and mdir is None:
            builder._source_dir(None)  # raises the explanatory DataError
        builder.download_and_prepare(download_config=download_config)
        return cls(data_dir=data_dir, **kwargs)


@contextlib.contextmanager
def _build_lock(data_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock (across processes) on building one dataset in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_split(dataset: str, split: str, data_dir: Optional[str | os.PathLike] = None, fold: Optional[int] = 0,
               manual_dir: Optional[str | os.PathLike] = None,
               labels_path: Optional[str | os.PathLike] = None) -> list[Document]:
    """Documents of one split (tfds split syntax such as ``"train+dev"`` works), built once and cached.

    ``fold`` only applies to ADE; ``manual_dir`` only to ACE05 (needed for its first build). Every gold type
    must be in ``labels_path`` (default: the staged ``<dataset>/labels.json``): a DataError names the source
    file, the document and the field otherwise.
    """
    builder = get_builder(dataset, data_dir=data_dir, fold=fold, manual_dir=manual_dir, labels_path=labels_path)
    source = f"tfds:{builder_name(dataset, (fold or 0) if dataset == 'ade' else None)}"
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in builder.info.splits:
            raise ValueError(f"{source} has no split {base!r}: available {', '.join(builder.info.splits)}")
    records = builder.as_data_source(split)
    n = len(records)
    # Batched random access is much faster than one __getitem__ per record.
    items = records.__getitems__(range(n)) if n else []
    labels = load_labels(builder.labels_path())
    docs: list[Document] = []
    for i, rec in enumerate(items):
        where = f"{split} record {i}"
        try:
            obj = json.loads(_text(rec["document"]))
        except json.JSONDecodeError as e:
            raise DataError(source, where, "document", f"invalid JSON in record: {e.msg}") from None
        doc = document_from_pure(obj, labels, source=source, where=where)
        if doc.doc_key != _text(rec["doc_key"]):
            raise DataError(source, where, "doc_key",
                            f"record key {_text(rec['doc_key'])!r} != document key {doc.doc_key!r}")
        docs.append(doc)
    return docs


def _text(value: bytes | str) -> str:
    # Without TF, tfds data sources return Text features as raw UTF-8 bytes.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
