"""The one place that defines every config field; `configs/<dataset>.py` only set dataset values.

Every field is overridable on the command line (`--config.model.gcn_layers=2`); an unknown field is
an error (ml_collections refuses it).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Optional

import ml_collections

from lai_jax.cli import UserError

PHASES = ("ner", "re")


def base_config(dataset: str, phase: str) -> ml_collections.ConfigDict:
    """Defaults shared by all datasets for one phase ("ner" or "re")."""
    if phase not in PHASES:
        raise UserError(f"phase must be one of {PHASES} (as in --config=configs/{dataset}.py:ner), got {phase!r}")
    c = ml_collections.ConfigDict()
    # Benchmark name: scierc | ade | conll04 | ace05 | custom (custom reads <data.dir>/<split>.json).
    c.dataset = dataset
    # Which model this run trains: "ner" (entities) or "re" (relations over given entities).
    c.phase = phase
    # Encoder: "default" = the offline packaged MiniLM-L6 BERT; else a local Hugging Face directory or a hub name.
    c.encoder = "default"
    # Random seed for parameters, dropout and data order.
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    # Folder with <split>.json files; "" = the bundled copy (through the tfds builders). ACE05: your PURE JSONL folder.
    c.data.dir = ""
    # Label annotation file; "" = <bundled data>/<dataset>/labels.json.
    c.data.labels = ""
    # ADE cross-validation fold (0-9).
    c.data.fold = 0
    # Split names. An empty dev_split holds out `dev_holdout` of train for model selection (ADE has no dev).
    c.data.train_split = "train"
    c.data.dev_split = "dev"
    c.data.test_split = "test"
    # Fraction of training documents held out as dev when dev_split is "".
    c.data.dev_holdout = 0.1
    # Seed of that hold-out, apart from `seed`: seeds then measure model variance on fixed data.
    c.data.holdout_seed = 0
    # Read the bundled benchmarks through their tensorflow-datasets builders (False: plain readers).
    c.data.use_tfds = True
    # Where the tfds builders cache prepared data; "" = ~/.cache/lai_jax/tfds (or $LAI_JAX_TFDS_DIR).
    c.data.tfds_dir = ""
    # Use only the first N sentences of each split (0 = all); for quick runs.
    c.data.train_limit = 0
    c.data.eval_limit = 0

    # C: wordpieces of sentence + document context per instance (paper: 150 ACE05/SciERC, 100 ADE).
    c.max_text_len = 150
    # L: longest candidate span in words.
    c.max_span_len = 8
    # K: candidate slots per NER instance; sentences with more candidates are split.
    c.max_candidates = 220
    # Object slots per RE instance (PL-Marker: 32 ACE05, 16 SciERC).
    c.max_objects = 16
    # Batch buckets: this many (slots, tokens) shapes chosen from the training data (the largest = (K, T)).
    # A window's candidates are split into instances sized for the slot counts and each batch is cut to the
    # smallest shape that holds it: far fewer padded slots and tokens, at most this many compiles per phase and
    # split. 1 = one static shape with candidates in consecutive chunks of K, as in the paper.
    c.num_buckets = 3
    # Evaluation's shapes when training samples (`ner.train_negatives` > 0 or `re.negative_subject_rate` < 1, whose
    # batches get their own shapes by length): 0 = `num_buckets`. Each is one more compile per phase (seconds on a
    # CPU) for padding that, at small K, it barely saves: the quick job's dev + test NER batches pad to 94k tokens
    # with one shape and 94k with three.
    c.eval_buckets = 0
    # Annotation segment on/off; False is the paper's "w/o 1st round" ablation (and disables G4CN).
    c.use_annotations = True
    # Partial attention preset: invisible (paper's best) | visible | full | plmarker | isolated (text and
    # annotations read no marker, a marker reads text, annotations and its partner: lai_jax/data/masks.py).
    c.attention_mask = "invisible"
    # Explicit 3x3 (TEXT, ANNO, MARKER) query-sees-key table; empty = use the preset.
    c.visibility = ()

    c.model = ml_collections.ConfigDict()
    # G4CN blocks (0-5; 0 = the paper's "w/o 2nd round").
    c.model.gcn_layers = 2
    # Densely connected sub-layers per block; their widths add up to the hidden size.
    c.model.gcn_sublayers = 2
    # Graph heads (1, 2, 3, 4 or 6; must divide the hidden size).
    c.model.gcn_heads = 4
    # Gaussian dimension of each node's distribution (GDPNet: 1).
    c.model.gauss_dim = 1
    # Edge weight: "kl" (GDPNet) or "exp_neg_kl".
    c.model.edge = "kl"
    # Dropout in the heads and the encoder.
    c.model.dropout = 0.1
    # Encoder dropout (hidden and attention); -1 keeps the values of the encoder's config.json.
    c.model.encoder_dropout = -1.0
    # Attention-probability dropout alone (after encoder_dropout). -1 = auto: 0 where training can then run
    # cuDNN's fused attention kernel (a GPU computing in bfloat16: jax.nn.dot_product_attention has no dropout),
    # else the encoder's value (BERT: 0.1). Set it (0.1) to keep attention dropout on GPUs too (XLA attention).
    c.model.attention_dropout = -1.0
    # Random bits per dropout draw: 8 needs a quarter of the RNG work of flax's Dropout (the rate is rounded
    # to 1/256: 0.1 -> 0.1016); 16 rounds to 1/65536; 32 is flax's exact Dropout. See lai_jax/dropout.py.
    c.model.dropout_bits = 8
    # NER entity filter (ablation: False classifies every candidate directly).
    c.model.use_filter = True
    # Start the G4CN's last output projection at zero, so the graph begins as a no-op and is learned from
    # there (False: random init, which adds a random projection of every node to the candidates).
    c.model.gcn_zero_init = False
    # Which nodes the G4CN's nodes aggregate: "all" (the paper's dense graph over candidates and annotations) or
    # "labels" (the annotation nodes only; each node keeps its own features). With "labels" and the `isolated`
    # attention mask, a candidate's logits do not depend on which other candidates share its instance.
    c.model.gcn_edges = "all"
    # Where the marker tokens' embeddings start: "unused" (the reserved vocabulary rows as the encoder has them,
    # as in the paper and PL-Marker) or "brackets" (the mean embedding of "[" / "]" for levitated markers, "<" /
    # ">" for RE subjects, plus the type's annotation wordpieces for typed RE markers; Featurizer.marker_sources).
    c.model.marker_init = "unused"
    # In training after cold start, spans whose filter probability reaches this value reach the classifier.
    c.model.filter_gate_threshold = 0.5
    # The classifier also trains on gold spans the filter misses (teacher forcing; False = the paper's gate).
    c.model.classifier_keeps_gold = False
    # Weight of the entity class in the filter loss (1 = the paper's plain mean over candidates).
    c.model.filter_pos_weight = 1.0
    # L_span is a sum over the spans the classifier sees divided by: "kept" (those spans, the paper's mean) or
    # "candidates" (all real candidates, the same scale as L_filter).
    c.model.span_loss_norm = "candidates"
    # L_ner = L_filter + span_loss_weight * L_span. With "candidates" the typing term is a few gold spans' loss
    # spread over ~100 candidates; a weight > 1 gives it more of the encoder's gradient (1 = the paper's sum).
    c.model.span_loss_weight = 1.0
    # Span features beside the paper's start / end tokens and markers (SpERT-style): span_pool "mean" adds the
    # mean of a NER span's text wordpieces, and to an RE pair the means of subject, object and the text between
    # them (models.pair_means); width_dim > 0 (NER) an embedding of the span's wordpiece count. Off in the paper
    # ("none", 0).
    c.model.span_pool = "none"
    c.model.width_dim = 0
    # Compute dtype: auto (bfloat16 on GPUs and TPUs, float32 on CPUs) | float32 | bfloat16. Parameters and
    # optimiser state stay float32; the classifier and filter logits and the G4CN graph are float32 always.
    c.model.dtype = "auto"
    # Rematerialise each encoder layer (saves activation memory on long inputs).
    c.model.remat = False

    # Global training batch (instances per optimiser step), the same whatever the device count. It is split
    # over processes x local devices x grad_accum_steps, which must divide it. Paper: per-GPU batch x 3 GPUs.
    c.batch_size = 48 if phase == "ner" else 120
    # Micro-batches per optimiser step: gradients are summed and losses normalised by the real counts of the
    # whole global batch, so k steps of batch_size/k equal one of batch_size (for fewer devices or less memory).
    c.grad_accum_steps = 1
    # Per-device batch size at evaluation.
    c.per_device_eval_batch_size = 32 if phase == "ner" else 64
    # Training epochs (paper: 80 NER, 60 RE).
    c.num_epochs = 80 if phase == "ner" else 60
    # NER cold start: epochs in which the gold entities replace the filter (paper: 15 ACE05, 40 SciERC/ADE).
    c.cold_start_epochs = 40 if phase == "ner" else 0
    # Stop after this many steps (0 = run all epochs); for smoke tests and quick looks.
    c.max_steps = 0
    # Training batches built and moved to the devices ahead of the step that needs them (background thread).
    c.prefetch_batches = 2
    # Evaluate on dev every N epochs (0: only at the end), and at the end. Each evaluation at least as good as
    # the best before saves the parameters (checkpoints/params/: what evaluate and predict read).
    c.eval_every_epochs = 1
    # Or every N steps if > 0 (overrides eval_every_epochs).
    c.eval_every_steps = 0
    # The full train state (parameters and Adam moments, 3x the parameters) for resuming is saved every N
    # evaluations and at the last step (checkpoints/state/). A kill loses at most N evaluation intervals (5
    # epochs of SciERC NER: about 240 steps, under a minute on one H100); writing BERT-base's 1.3 GB state
    # every epoch would cost more disk traffic than the steps take. 1 = at every evaluation.
    c.checkpoint_every_evals = 5
    # Console / TensorBoard loss logging interval in steps (also the NaN-check interval).
    c.log_every_steps = 10
    # JAX's persistent compilation cache: "" = $LAI_JAX_COMPILE_CACHE or ~/.cache/lai_jax/jax_cache, "off",
    # or a folder. Reruns, resumes, other seeds, evaluate and predict load compiled steps instead of compiling.
    c.compile_cache = ""

    c.optim = ml_collections.ConfigDict()
    # Peak learning rate of the heads (paper: 4e-4).
    c.optim.learning_rate = 4e-4
    # Peak learning rate of the encoder. The paper uses 4e-4 for all layers (A.1), which on a pretrained BERT
    # usually destroys its features; 5e-5 is the conventional fine-tuning rate (see README, "Training").
    c.optim.encoder_learning_rate = 5e-5
    # Fraction of steps spent in linear warm-up, then linear decay to 0.
    c.optim.warmup_ratio = 0.1
    # AdamW weight decay (not applied to biases and layer norms).
    c.optim.weight_decay = 0.01
    # Adam epsilon. Near-zero gradients make Adam's update ~ sign(g), so summation-order noise between
    # device counts is amplified by lr/eps; the multi-device equality test raises it to compare exactly.
    c.optim.adam_eps = 1e-8
    # Global gradient-norm clip (0 = off).
    c.optim.grad_clip = 1.0
    # Exponential moving average of the parameters (Polyak averaging), updated after every step with the decay
    # min(ema_decay, (1 + step) / (10 + step)); evaluation, the best-checkpoint choice, the saved parameters
    # and RE's `re.init_from_ner` use the average, the optimiser keeps training the raw parameters.
    # 0 = off (the paper's and the default).
    c.optim.ema_decay = 0.0

    c.ner = ml_collections.ConfigDict()
    # Entity filter probability threshold at decoding.
    c.ner.filter_threshold = 0.5
    # NER training on sampled candidates: each epoch, every gold span of a window and this many of its other
    # candidates, drawn anew, each weighted by its inverse sampling rate so the loss keeps its expectation
    # (SpERT samples 100 per sentence). Evaluation always scores every candidate. 0 = every candidate (paper).
    c.ner.train_negatives = 0
    # Of those negatives, this many drawn from the candidates that share a word with a gold span (boundary
    # errors) and the rest from the others, each stratum weighted by its own inverse rate. 0 = uniform draws.
    c.ner.hard_negatives = 0
    # Whether those sampled negatives weigh their inverse sampling rate (True: the loss keeps its full-data
    # expectation) or 1 (False: SpERT's sampled negatives; gold spans get a larger share of the loss).
    c.ner.reweight_negatives = True
    # Overlapping predicted entities: plmarker (PL-Marker's evaluation: of overlapping spans with the same type
    # the higher-scoring one is kept; nested/overlapping spans of different types are all kept) | flat (greedy,
    # no overlaps at all, whatever the types) | none (keep everything). Replaces the old boolean ner.flat_ner.
    c.ner.overlap = "plmarker"

    c.re = ml_collections.ConfigDict()
    # NER workdir whose predictions supply entities for end-to-end RE ("" = gold entities).
    c.re.entities_from = ""
    # Start the RE encoder from the entities_from NER run's fine-tuned encoder instead of the pretrained one
    # (PURE / PL-Marker and the paper start from the pretrained encoder; this transfers what NER learned).
    # Without entities_from (RE on gold entities) there is no NER run and the pretrained encoder is used.
    c.re.init_from_ner = False
    # Direction rule: both (paper) | either | sum (PL-Marker).
    c.re.re_decode = "both"
    # Probability threshold of a direction's decision.
    c.re.threshold = 0.5
    # Decode only relations whose (relation, head type, tail type) occurs in the training split: a class that
    # does not fit a pair's predicted entity types is ruled out before the direction rule. Not in the paper.
    c.re.type_constraints = False
    # Typed RE markers (PURE): the solid subject markers and the levitated object markers name the entity's type
    # (gold in training, the NER run's prediction end to end), so the encoder reads the pair's types in context.
    # Not in the paper, whose markers are the same for every entity.
    c.re.typed_markers = False
    # RE training on sampled subjects: each epoch, every subject instance with a gold relation and this
    # fraction of the others, drawn anew and weighted by the inverse rate (the loss keeps its expectation).
    # Evaluation always scores every subject. 1 = every subject (paper).
    c.re.negative_subject_rate = 1.0
    # Whether those sampled subjects weigh the inverse rate (True: the loss keeps its full-data expectation) or
    # 1 (False: as SpERT's sampled negatives, so the relation classes get a larger share of each step's gradient).
    c.re.reweight_subjects = True

    c.eval = ml_collections.ConfigDict()
    # Symmetric relation types (labels.json "symmetric": true) in RE / RE+ scores: both (PL-Marker, so comparable
    # with Table 1: a symmetric relation counts twice, once per direction, in gold, predictions and hits) | once.
    c.eval.symmetric_count = "both"
    # The F1 that selects the best checkpoint on dev and that `lai_jax.experiments` tables: micro | macro (the
    # paper reports macro for ADE: configs/ade.py sets it).
    c.eval.select_average = "micro"

    # Data-parallel runner: pmap (default) | shard_map (jit of shard_map over a ("data",) mesh).
    c.parallel = "pmap"
    # Call jax.distributed.initialize() (multi-host; SLURM/TPU environments fill the arguments).
    c.distributed = False
    # Testing hook: SIGKILL the process right after this step (0 = off); proves resume works.
    c.debug_kill_after_step = 0
    return c


def parse_assignment(c: ml_collections.ConfigDict, item: str) -> tuple[str, object]:
    """"model.dropout_bits=32" -> ("model.dropout_bits", 32): the value parsed as the field's type in `c`."""
    key, sep, text = item.partition("=")
    node = c
    for part in key.split("."):
        if not sep or not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise UserError(f"{item!r}: expected FIELD=VALUE with FIELD a config field (like model.dropout_bits)")
        node = node[part]
    kind = type(node)
    if kind not in (bool, int, float, str):
        raise UserError(f"{item!r}: {key} is a {kind.__name__}, not a number, flag or string")
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return key, text.lower() in ("true", "1")
        return key, kind(text)
    except ValueError:
        raise UserError(f"{item!r}: {text!r} is not a {kind.__name__}") from None


def set_fields(c: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """Set dotted fields ("model.gcn_layers") on a config, refusing unknown ones."""
    for key, value in fields.items():
        *parents, leaf = key.split(".")
        node = c
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"unknown config field {key!r}")
        node[leaf] = value
    return c


def load_config_file(path: str | Path, phase: Optional[str] = None) -> ml_collections.ConfigDict:
    """A config from a `configs/<dataset>.py` file (phase "ner" unless given), as --config=FILE:PHASE loads it."""
    spec = importlib.util.spec_from_file_location(f"_lai_jax_config_{Path(path).stem}", path)
    if spec is None or spec.loader is None or not Path(path).exists():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(phase or "ner")


def get_field(c: ml_collections.ConfigDict, key: str) -> Any:
    """The value of a dotted field ("re.entities_from")."""
    for part in key.split("."):
        c = c[part]
    return c


# Fields that name another training run. config.json stores them relative to the run's own workdir, so that
# runs moved or copied together (runs/x/ner and runs/x/re) still find each other, from any working folder.
RUN_REFERENCES = ("re.entities_from",)
# Fields that name files or folders (the encoder only when it is a local folder, not a hub name): stored
# absolute, so that the run reads them whatever the working folder of a later command.
PATH_FIELDS = ("encoder", "data.dir", "data.labels", "data.tfds_dir")


def absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose run references and paths (given relative to the working folder) are absolute."""
    config = copy.deepcopy(config)
    for key in RUN_REFERENCES + PATH_FIELDS:
        value = get_field(config, key)
        local = key != "encoder" or os.path.exists(os.path.expanduser(value))  # else "default" or a hub name
        if value and local:
            set_fields(config, **{key: os.path.abspath(os.path.expanduser(value))})
    return config


def stored_reference(value: str, workdir: str | Path) -> str:
    """A run reference as config.json stores it: relative to `workdir` ("../ner"); "" stays ""."""
    return os.path.relpath(os.path.abspath(value), os.path.abspath(workdir)) if value else ""


def resolve_reference(value: str, workdir: str | Path) -> str:
    """A stored run reference as an absolute path: relative to `workdir` (how runs store it now), else, for runs
    saved before, relative to the working folder; the workdir-relative path when neither is a run."""
    if not value or os.path.isabs(value):
        return value
    candidates = [Path(workdir) / value, Path(value)]
    found = next((c for c in candidates if (c / "config.json").exists()), candidates[0])
    return os.path.abspath(found)


def save_run_config(config: ml_collections.ConfigDict, workdir: str | Path) -> None:
    """<workdir>/config.json with `RUN_REFERENCES` relative to the workdir (`load_run_config` reads it back)."""
    saved = json.loads(config.to_json_best_effort())
    for key in RUN_REFERENCES:
        *parents, leaf = key.split(".")
        node = saved
        for part in parents:
            node = node[part]
        node[leaf] = stored_reference(node[leaf], workdir)
    path = Path(workdir) / "config.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(saved, indent=2))
    os.replace(tmp, path)


def load_run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """A training run's saved config (<workdir>/config.json), laid over today's defaults so that workdirs
    written before a field existed still load; run references resolved to absolute paths."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        kind = "no such folder" if not Path(workdir).is_dir() else "no config.json"
        raise FileNotFoundError(f"{workdir} is not a lai-jax training workdir ({kind}); give the --workdir of a "
                                f"training run (python -m lai_jax.main ... --workdir=DIR)")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a lai-jax run config ({e})") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a lai-jax run config (not a JSON object)")
    _upgrade(saved)
    try:
        config = base_config(saved["dataset"], saved["phase"])
    except (KeyError, ValueError) as e:
        raise UserError(f"{path}: not a lai-jax run config ({e})") from None
    with config.unlocked():
        _merge(config, saved)
    if "holdout_seed" not in saved.get("data", {}):  # written when the dev hold-out followed the training seed
        config.data.holdout_seed = config.seed
    for key in RUN_REFERENCES:
        set_fields(config, **{key: resolve_reference(get_field(config, key), workdir)})
    return config


def _upgrade(saved: dict) -> None:
    """Renamed fields of older saved configs: ner.flat_ner (bool) is now ner.overlap ("flat" / "none")."""
    ner = saved.get("ner")
    if isinstance(ner, dict) and "flat_ner" in ner:
        flat = ner.pop("flat_ner")
        ner.setdefault("overlap", "flat" if flat else "none")  # the rule that run was decoded with


def _merge(config: ml_collections.ConfigDict, saved: dict) -> None:
    for key, value in saved.items():
        if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
            _merge(config[key], value)
        else:
            config[key] = value
