"""LAI-Net for one phase: encoder, candidate/pair representation, G4CN, task heads (SPEC §6-8).

The module maps a batch of instances (see `lai_jax.data.features`) to logits; losses are separate pure
functions returning (sums, counts) so that the train step can normalise by *global* real counts and a
run on N devices equals one device on the same global batch.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lai_jax.data import masks
from lai_jax.data.labels import LabelSet, RelationLabelSpace
from lai_jax.dropout import Dropout
from lai_jax.encoder import BertConfig, BertEncoder
from lai_jax.g4cn import G4CN


SPAN_LOSS_NORMS = ("candidates", "kept")
SPAN_POOLS = ("none", "mean")
GCN_EDGES = ("all", "labels")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Everything about the model but the encoder (config group `model`, plus mask fields)."""
    phase: str  # "ner" | "re"
    num_classes: int  # NER: 1 + entity types (0 = none); RE: RelationLabelSpace.num_classes
    gcn_layers: int = 2
    gcn_sublayers: int = 2
    gcn_heads: int = 4
    gauss_dim: int = 1
    edge: str = "kl"
    dropout: float = 0.1
    dropout_bits: int = 8  # see lai_jax.dropout
    use_filter: bool = True  # NER entity filter (ablation switch)
    use_annotations: bool = True  # annotation segment; without it there is no G4CN either
    visibility: tuple = ()  # 4x4 group table from masks.visibility_table, as nested tuples
    partner_only: bool = False  # PL-Marker rule: a marker sees only itself and its partner among markers
    gcn_zero_init: bool = False  # G4CN's last projection starts at 0 (H~ = H/2 at init)
    gcn_edges: str = "all"  # "labels": nodes aggregate the annotation nodes only (and keep their own features)
    filter_gate_threshold: float = 0.5  # filter probability above which a span reaches the classifier in training
    classifier_keeps_gold: bool = False  # the classifier also trains on gold spans the filter misses
    filter_pos_weight: float = 1.0  # weight of the entity class in L_filter (1 = the paper's plain mean)
    span_loss_norm: str = "candidates"  # L_span divided by the kept spans ("kept", paper) or all real candidates
    span_loss_weight: float = 1.0  # L_ner = L_filter + w * L_span (1 = the paper's sum)
    span_pool: str = "none"  # "mean": NER spans add their wordpieces' mean; RE pairs add pair_means (SpERT pools)
    width_dim: int = 0  # NER span feature: an embedding of the span's wordpiece count (0 = none, the paper)

    @classmethod
    def from_config(cls, config: Any, labels: LabelSet) -> "HeadConfig":
        """The head of `config.phase`: every `model` field that names a HeadConfig field, plus the attention mask
        fields and the class count from the label set."""
        if config.phase == "ner":
            num_classes = 1 + len(labels.entity_types)
        else:
            num_classes = RelationLabelSpace(labels.relation_types, labels.symmetric).num_classes
        table = masks.visibility_table(config.attention_mask, config.visibility)
        shared = {f.name for f in dataclasses.fields(cls)} & set(config.model.keys())
        return cls(phase=config.phase, num_classes=num_classes, use_annotations=config.use_annotations,
                   visibility=tuple(map(tuple, table.tolist())),
                   partner_only=config.attention_mask in masks.PARTNER_ONLY and not config.visibility,
                   **{k: config.model[k] for k in sorted(shared)})


MAX_WIDTH = 32  # width embedding rows: spans of more wordpieces share the last


def prefix_sums(h: jnp.ndarray) -> jnp.ndarray:
    """h [B, T, d] -> [B, T + 1, d] float32 with row i = sum of h[:, :i] (float32 whatever h's dtype, so long
    prefixes lose nothing in bfloat16)."""
    csum = jnp.cumsum(h.astype(jnp.float32), axis=1)
    return jnp.concatenate([jnp.zeros_like(csum[:, :1]), csum], axis=1)


def span_mean(h: jnp.ndarray, start: jnp.ndarray, end: jnp.ndarray, csum: Optional[jnp.ndarray] = None
              ) -> jnp.ndarray:
    """Mean of h [B, T, d] over the tokens start..end (inclusive, [B, K] each) -> [B, K, d], float32.

    Two gathers from a prefix sum (`csum`, from `prefix_sums(h)`; computed here if not given) rather than a
    [B, K, T] mask: the cost does not grow with K x T.
    """
    csum = prefix_sums(h) if csum is None else csum
    total = gather_tokens(csum, end + 1) - gather_tokens(csum, start)
    return total / jnp.maximum(end - start + 1, 1)[..., None].astype(jnp.float32)


def pair_means(h: jnp.ndarray, batch: dict) -> list[jnp.ndarray]:
    """RE pair features for `span_pool="mean"` (SpERT's entity and context pools): the means of the subject's
    and each object's wordpieces and of the text between them (zero where they touch or overlap), [B, K, d] each.

    A levitated object marker copies its span's first / last text position id, and a text token's position id
    is its index, so the object spans come from `position_ids` with no extra feature arrays.
    """
    csum = prefix_sums(h)
    o_start = jnp.take_along_axis(batch["position_ids"], batch["cand_marker_start"], axis=1)
    o_end = jnp.take_along_axis(batch["position_ids"], batch["cand_marker_end"], axis=1)
    m_start, m_end = batch["subj_marker_start"][:, None], batch["subj_marker_end"][:, None]  # solid subject markers
    subj = jnp.broadcast_to(span_mean(h, m_start + 1, m_end - 1, csum), (*o_start.shape, h.shape[-1]))
    lo, hi = jnp.minimum(m_end, o_end) + 1, jnp.maximum(m_start, o_start) - 1
    between = jnp.where((hi >= lo)[..., None], span_mean(h, lo, jnp.maximum(hi, lo), csum), 0.0)
    return [x.astype(h.dtype) for x in (subj, span_mean(h, o_start, o_end, csum), between)]


def gather_tokens(h: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
    """h [B, T, d], idx [B, ...] token indices -> [B, ..., d]."""
    flat = idx.reshape(idx.shape[0], -1)
    out = jnp.take_along_axis(h, flat[..., None], axis=1)
    return out.reshape(*idx.shape, h.shape[-1])


class LAIHeads(nn.Module):
    """Everything after the encoder: candidate/pair representation, G4CN, classifier and filter."""
    hidden: int
    head: HeadConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jnp.ndarray, batch: dict, deterministic: bool = True) -> dict[str, jnp.ndarray]:
        cfg, d = self.head, self.hidden
        dense = lambda n, name: nn.Dense(n, name=name, dtype=self.dtype)  # noqa: E731
        markers = [gather_tokens(h, batch["cand_marker_start"]), gather_tokens(h, batch["cand_marker_end"])]
        if cfg.phase == "ner":
            start, end = batch["cand_text_start"], batch["cand_text_end"]
            text = [gather_tokens(h, start), gather_tokens(h, end)]
            if cfg.span_pool == "mean":
                text.append(span_mean(h, start, end).astype(h.dtype))
            if cfg.width_dim:
                width = jnp.clip(end - start, 0, MAX_WIDTH - 1)
                text.append(nn.Embed(MAX_WIDTH, cfg.width_dim, dtype=self.dtype, name="width_embed")(width))
            cand = dense(d, "span_proj")(jnp.concatenate(text + markers, axis=-1))
        else:
            subj = jnp.concatenate([gather_tokens(h, batch["subj_marker_start"]),
                                    gather_tokens(h, batch["subj_marker_end"])], axis=-1)
            subj = jnp.broadcast_to(subj[:, None], (*markers[0].shape[:2], subj.shape[-1]))
            pooled = pair_means(h, batch) if cfg.span_pool == "mean" else []
            cand = dense(d, "pair_proj")(jnp.concatenate([subj] + markers + pooled, axis=-1))
        cand = Dropout(cfg.dropout, cfg.dropout_bits)(cand, deterministic=deterministic)
        if cfg.use_annotations and cfg.gcn_layers > 0:
            anno = dense(d, "anno_proj")(jnp.concatenate(
                [gather_tokens(h, batch["anno_start"]), gather_tokens(h, batch["anno_end"])], axis=-1))
            nodes = jnp.concatenate([cand, anno.astype(cand.dtype)], axis=1)
            node_mask = jnp.concatenate([batch["cand_mask"], jnp.ones(anno.shape[:2], bool)], axis=1)
            sources = None
            if cfg.gcn_edges == "labels":  # no candidate reads another: its output does not depend on its mates
                sources = jnp.concatenate([jnp.zeros_like(batch["cand_mask"]), jnp.ones(anno.shape[:2], bool)], axis=1)
            g = G4CN(hidden=d, gcn_layers=cfg.gcn_layers, gcn_sublayers=cfg.gcn_sublayers, gcn_heads=cfg.gcn_heads,
                     gauss_dim=cfg.gauss_dim, edge=cfg.edge, dropout=cfg.dropout, dropout_bits=cfg.dropout_bits,
                     zero_init_out=cfg.gcn_zero_init, dtype=self.dtype, name="g4cn")(
                         nodes, node_mask, deterministic=deterministic, source_mask=sources)
            cand = 0.5 * (cand + g[:, :cand.shape[1]])
        # The classifier and filter compute in float32 whatever `dtype`: tiny matmuls, and their logits feed the
        # softmax losses and the decoding thresholds directly.
        cand32 = cand.astype(jnp.float32)
        out = {"logits": nn.Dense(cfg.num_classes, dtype=jnp.float32, name="classifier")(cand32)}
        if cfg.phase == "ner" and cfg.use_filter:
            out["filter_logits"] = nn.Dense(2, dtype=jnp.float32, name="filter")(cand32)
        return out


class LAINet(nn.Module):
    """Encoder (with the instance's partial attention mask) followed by the phase's heads."""
    bert: BertConfig
    head: HeadConfig

    def heads(self) -> LAIHeads:
        return LAIHeads(self.bert.hidden_size, self.head, self.bert.dtype, name="heads")

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True) -> dict[str, jnp.ndarray]:
        mask = masks.attention_mask(batch["token_groups"].astype(jnp.int32), batch["marker_partner"],
                                    jnp.asarray(self.head.visibility, bool), self.head.partner_only, xp=jnp)
        h = BertEncoder(self.bert, name="encoder")(batch["input_ids"], batch["position_ids"], batch["token_type_ids"],
                                                   mask, deterministic=deterministic)
        return self.heads()(h, batch, deterministic)

    def init_params(self, rng: jax.Array, batch: dict, encoder_params: dict) -> dict:
        """Parameters with pretrained encoder weights; only the (small) heads are initialised and compiled."""
        h = jnp.zeros((*batch["input_ids"].shape, self.bert.hidden_size), self.bert.dtype)
        heads = LAIHeads(self.bert.hidden_size, self.head, self.bert.dtype, parent=None)
        head_params = jax.jit(lambda r, h, b: heads.init(r, h, b)["params"])(rng, h, batch)
        return {"encoder": encoder_params, "heads": head_params}


# ---------------------------------------------------------------------------------------------- losses
def _xent(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def ner_loss(out: dict, batch: dict, use_gold_filter: jnp.ndarray, head: Optional[HeadConfig] = None
             ) -> tuple[dict, dict]:
    """L_ner = L_filter + L_span as (sums, counts) over real candidates (SPEC §7).

    The span classifier sees the spans the filter keeps: the gold entities while `use_gold_filter`
    (cold start), afterwards the filter's own stop-gradient decision at `head.filter_gate_threshold`
    (plus the gold spans when `head.classifier_keeps_gold`). `head.filter_pos_weight` weighs the
    entity class in L_filter; the count is then the weighted count, so the term stays a weighted mean.
    `head.span_loss_weight` scales L_span (the typing term's share of the encoder's gradient).
    Each slot also carries its `cand_weight` (a sampled negative's inverse sampling rate, else 1) in both
    terms' sums and counts, so a loss over sampled candidates equals the full one in expectation.
    """
    head = head or HeadConfig("ner", 2)
    real = batch["cand_mask"] & (batch["weight"][:, None] > 0)
    w_slot = _slot_weights(batch, real)
    labels = batch["labels"]
    is_entity = labels > 0
    sums, counts = {}, {}
    if "filter_logits" in out:
        w = w_slot * jnp.where(is_entity, head.filter_pos_weight, 1.0)
        sums["filter"] = jnp.sum(_xent(out["filter_logits"], is_entity.astype(jnp.int32)) * w)
        counts["filter"] = jnp.sum(w)
        p_entity = jax.nn.softmax(out["filter_logits"], axis=-1)[..., 1]
        predicted = jax.lax.stop_gradient(p_entity >= head.filter_gate_threshold)
        if head.classifier_keeps_gold:
            predicted = predicted | is_entity
        keep = real & jnp.where(use_gold_filter, is_entity, predicted)
    else:
        keep = real
    sums["span"] = head.span_loss_weight * jnp.sum(_xent(out["logits"], labels) * keep * w_slot)
    counts["span"] = jnp.sum(w_slot) if head.span_loss_norm == "candidates" else jnp.sum(keep * w_slot)
    return sums, counts


def _slot_weights(batch: dict, real: jnp.ndarray) -> jnp.ndarray:
    """Per-slot loss weights of real slots: 1, or a sampled negative's inverse sampling rate (`cand_weight`)."""
    return real * batch["cand_weight"] if "cand_weight" in batch else real.astype(jnp.float32)


def re_loss(out: dict, batch: dict, use_gold_filter: Optional[jnp.ndarray] = None,
            head: Optional[HeadConfig] = None) -> tuple[dict, dict]:
    """Cross-entropy over real object slots (relation types + inverses + none)."""
    del use_gold_filter, head
    real = batch["cand_mask"] & (batch["weight"][:, None] > 0)
    w = _slot_weights(batch, real)
    return {"pair": jnp.sum(_xent(out["logits"], batch["labels"]) * w)}, {"pair": jnp.sum(w)}


def predict_probs(out: dict) -> dict[str, jnp.ndarray]:
    """Eval-time outputs shipped to the host for decoding."""
    probs = {"type_probs": jax.nn.softmax(out["logits"], axis=-1)}
    if "filter_logits" in out:
        probs["filter_prob"] = jax.nn.softmax(out["filter_logits"], axis=-1)[..., 1]
    return probs


LOSSES: dict[str, Any] = {"ner": ner_loss, "re": re_loss}
