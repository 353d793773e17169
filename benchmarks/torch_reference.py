"""A straight PyTorch port of the LAI-Net NER model, for the benchmark and its parity test only.

    tmodel = TorchLAINet.from_pretrained(encoder_path, head)   # transformers.BertModel, eager attention
    copy_flax_params(tmodel, state.params)                     # same weights as the lai-jax model
    # or both at once, with the lai-jax model's sizes and dropout rates: like_lai_jax(setup, state.params)
    out = tmodel(to_torch(batch))                              # {"logits", "filter_logits"}
    sums, counts = ner_loss(out, tb, use_gold_filter=True)

On a GPU: `like_lai_jax(..., device="cuda")`, `to_torch(batch, "cuda")` and `train_step(..., autocast=torch.bfloat16)`
(mixed precision as torch users train: float32 weights, bf16 matmuls and attention).

Every piece mirrors its lai-jax counterpart operation for operation, so that both frameworks do the
same work and compute the same function (checked by tests/test_bench.py):

* mask: `lai_jax.data.masks.attention_mask` (run with ``xp=torch``) on ``token_groups`` /
  ``marker_partner``, turned into the additive [B, 1, T, T] float mask (0 / finfo.min) that
  transformers 5 adds unchanged to the eager attention scores (see tests/test_encoder.py);
* encoder: `transformers.BertModel` without pooler (``lai_jax.encoder.BertEncoder``);
* span / annotation representations, G4CN and heads: `lai_jax.models.LAINet` (NER phase) and
  `lai_jax.g4cn` -- including the centred, expanded-square KL matrix and the ``A (X K) + X K + 2 b``
  form of the DCGCN sub-layers (same value as ``W(AX) + W(X)``, same FLOPs as the JAX side);
* loss: `lai_jax.models.ner_loss` (sums and counts; the objective divides each sum by its count).

Only the NER phase is ported (the benchmark's subject). Dropout sits where lai-jax puts it (HF BERT's
own dropouts, after ``span_proj``, on each G4CN sub-layer output), so train-mode steps do the same
work, though the random masks of course differ.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lai_jax.data import masks
from lai_jax.g4cn import EDGES, sublayer_widths
from lai_jax.models import HeadConfig

# Batch fields (lai_jax.data.features) and the torch dtype each travels as.
_INT_FIELDS = ("input_ids", "position_ids", "token_type_ids", "token_groups", "marker_partner", "anno_start",
               "anno_end", "cand_marker_start", "cand_marker_end", "cand_text_start", "cand_text_end", "labels")


def to_torch(batch: Mapping[str, np.ndarray], device: Any = None) -> dict[str, torch.Tensor]:
    """A lai-jax host batch (numpy) -> torch tensors on `device` (indices as int64, masks bool, weights float32)."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        if k in _INT_FIELDS:
            t = torch.from_numpy(v.astype(np.int64))
        elif v.dtype == bool:
            t = torch.from_numpy(v.copy())
        else:
            t = torch.from_numpy(v.astype(np.float32))
        out[k] = t if device is None else t.to(device)
    return out


class _TorchOn:
    """torch as `masks.attention_mask`'s array namespace, creating its arrays on `device` (the batch's)."""

    where = staticmethod(torch.where)

    def __init__(self, device: Any):
        self.device = device

    def asarray(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)


def _compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype autocast computes in on `device`, float32 outside autocast."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def additive_mask(token_groups: torch.Tensor, marker_partner: torch.Tensor, visibility: Any,
                  partner_only: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, 1, T, T] `dtype`: 0 where the query row sees the key column, finfo(dtype).min elsewhere.

    The boolean [B, T, T] mask is `lai_jax.data.masks.attention_mask` itself, evaluated with torch on the
    batch's device. Under autocast the mask takes the attention's dtype (SDPA's fused kernels want them equal).
    """
    xp = _TorchOn(token_groups.device)
    seen = masks.attention_mask(token_groups.long(), marker_partner.long(), np.asarray(visibility, bool),
                                partner_only, xp=xp)
    return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill(~seen, torch.finfo(dtype).min)[:, None]


def gather_tokens(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """h [B, T, d], idx [B, K] -> [B, K, d] (`lai_jax.models.gather_tokens`)."""
    return torch.gather(h, 1, idx[..., None].expand(*idx.shape, h.shape[-1]))


# -------------------------------------------------------------------------------------------- G4CN
def gaussian_kl_matrix(mu: torch.Tensor, sigma: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`lai_jax.g4cn.gaussian_kl_matrix`: [..., n, n] with out[i, j] = KL(N_i || N_j), diagonal 0."""
    mu, sigma = mu.float(), sigma.float()
    n, g = mu.shape[-2], mu.shape[-1]
    if mask is None:
        centre = mu.mean(dim=-2, keepdim=True)
    else:
        w = mask.broadcast_to(mu.shape[:-1]).float()[..., None]
        centre = (mu * w).sum(dim=-2, keepdim=True) / w.sum(dim=-2, keepdim=True).clamp_min(1.0)
    mu = mu - centre
    var = sigma.square()
    prec = 1.0 / var
    log_var = 2.0 * torch.log(sigma)
    u = torch.cat([var + mu.square(), mu], dim=-1)
    v = torch.cat([prec, -2.0 * mu * prec], dim=-1)
    cross = u @ v.transpose(-1, -2)
    row = -log_var.sum(dim=-1) - g
    col = (log_var + mu.square() * prec).sum(dim=-1)
    kl = (0.5 * (cross + row[..., :, None] + col[..., None, :])).clamp_min(0.0)
    eye = torch.eye(n, dtype=torch.bool, device=kl.device)
    return kl.masked_fill(eye, 0.0)


class G4CNBlock(nn.Module):
    """`lai_jax.g4cn.G4CNBlock`: per-head densely connected GCN sub-layers, residual, heads -> Dense."""

    def __init__(self, hidden: int, sublayers: int, heads: int, dropout: float):
        super().__init__()
        self.hidden, self.heads = hidden, heads
        widths = sublayer_widths(hidden, sublayers)
        in_dims = [hidden + sum(widths[:l]) for l in range(len(widths))]
        self.kernels = nn.ParameterList(
            nn.Parameter(torch.randn(heads, i, w) / math.sqrt(i)) for i, w in zip(in_dims, widths))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(heads, w)) for w in widths)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(heads * hidden, hidden)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, denom: torch.Tensor, node_mask: torch.Tensor):
        d = self.hidden
        cache: list[torch.Tensor] = []
        outs: list[torch.Tensor] = []
        for kernel, bias in zip(self.kernels, self.biases):
            xw = torch.einsum("bnc,hcw->bhnw", x, kernel[:, :d])
            off = d
            for c in cache:
                xw = xw + torch.einsum("bhnc,hcw->bhnw", c, kernel[:, off:off + c.shape[-1]])
                off += c.shape[-1]
            pre = adj @ xw + xw + 2.0 * bias[None, :, None, :]
            g = F.relu(pre / denom)
            cache.append(g)
            outs.append(self.drop(g))
        y = torch.cat(outs, dim=-1) + x[:, None]  # [B, H, n, d]
        B, H, n, _ = y.shape
        y = self.out(y.permute(0, 2, 1, 3).reshape(B, n, H * d))
        return y.masked_fill(~node_mask[..., None], 0.0)


class G4CN(nn.Module):
    """`lai_jax.g4cn.G4CN`: Gaussian graph generator (one adjacency per pass) + stacked blocks."""

    def __init__(self, hidden: int, gcn_layers: int = 2, gcn_sublayers: int = 2, gcn_heads: int = 4,
                 gauss_dim: int = 1, edge: str = "kl", dropout: float = 0.1, sigma_eps: float = 1e-4):
        super().__init__()
        if edge not in EDGES:
            raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
        self.heads, self.gauss_dim, self.edge, self.sigma_eps = gcn_heads, gauss_dim, edge, sigma_eps
        self.gauss = nn.Linear(hidden, gcn_heads * 2 * gauss_dim)
        self.blocks = nn.ModuleList(G4CNBlock(hidden, gcn_sublayers, gcn_heads, dropout) for _ in range(gcn_layers))

    def forward(self, nodes: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        if not self.blocks:
            return nodes
        H, g = self.heads, self.gauss_dim
        x = nodes.masked_fill(~node_mask[..., None], 0.0)
        gp = self.gauss(x)
        B, n = gp.shape[:2]
        gp = gp.reshape(B, n, H, 2, g).permute(0, 2, 1, 3, 4)  # [B, H, n, 2, g]
        mu = gp[..., 0, :]
        sigma = F.softplus(gp[..., 1, :]) + self.sigma_eps
        m = node_mask[:, None, :]
        kl = gaussian_kl_matrix(mu, sigma, mask=m)
        adj = kl if self.edge == "kl" else torch.exp(-kl)
        pair = m[..., :, None] & m[..., None, :]
        adj = adj.masked_fill(~pair, 0.0)
        denom = adj.sum(dim=-1, keepdim=True) + 1.0
        for block in self.blocks:
            x = block(x, adj, denom, node_mask)
        return x


# ------------------------------------------------------------------------------------------- model
class TorchLAINet(nn.Module):
    """`lai_jax.models.LAINet` for the NER phase, on a `transformers.BertModel` encoder."""

    def __init__(self, bert: nn.Module, head: HeadConfig):
        super().__init__()
        if head.phase != "ner":
            raise ValueError("the torch reference ports the NER phase only")
        d = bert.config.hidden_size
        self.head = head
        self.bert = bert
        self.span_proj = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(head.dropout)
        self.use_graph = head.use_annotations and head.gcn_layers > 0
        if self.use_graph:
            self.anno_proj = nn.Linear(2 * d, d)
            self.g4cn = G4CN(d, head.gcn_layers, head.gcn_sublayers, head.gcn_heads, head.gauss_dim, head.edge,
                             head.dropout)
        self.classifier = nn.Linear(d, head.num_classes)
        if head.use_filter:
            self.filter = nn.Linear(d, 2)

    @classmethod
    def from_pretrained(cls, path: str, head: HeadConfig, num_hidden_layers: Optional[int] = None,
                        attn_implementation: str = "eager", **config_overrides: Any) -> "TorchLAINet":
        """Encoder weights from the HF directory `path` (optionally only its first layers); heads random.

        `config_overrides` replace fields of the encoder's config.json (e.g. the dropout probabilities).
        """
        import transformers
        from transformers import BertModel

        kw = dict(config_overrides)
        if num_hidden_layers is not None:
            kw["num_hidden_layers"] = num_hidden_layers
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # truncation reports the unused layers' weights
        try:
            bert = BertModel.from_pretrained(path, attn_implementation=attn_implementation, add_pooling_layer=False,
                                             **kw)
        finally:
            transformers.logging.set_verbosity(verbosity)
        return cls(bert, head)

    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states [B, T, d] under the partial attention mask."""
        head = self.head
        groups = batch["token_groups"]
        mask = additive_mask(groups, batch["marker_partner"], head.visibility, head.partner_only,
                             _compute_dtype(groups.device))
        return self.bert(input_ids=batch["input_ids"], attention_mask=mask, token_type_ids=batch["token_type_ids"],
                         position_ids=batch["position_ids"]).last_hidden_state

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encode(batch)
        parts = [gather_tokens(h, batch[k]) for k in
                 ("cand_text_start", "cand_text_end", "cand_marker_start", "cand_marker_end")]
        cand = self.drop(self.span_proj(torch.cat(parts, dim=-1)))
        if self.use_graph:
            anno = self.anno_proj(torch.cat([gather_tokens(h, batch["anno_start"]),
                                             gather_tokens(h, batch["anno_end"])], dim=-1))
            nodes = torch.cat([cand, anno], dim=1)
            node_mask = torch.cat([batch["cand_mask"], torch.ones(anno.shape[:2], dtype=torch.bool,
                                                                  device=anno.device)], dim=1)
            g = self.g4cn(nodes, node_mask)
            cand = 0.5 * (cand + g[:, :cand.shape[1]])
        out = {"logits": self.classifier(cand)}
        if self.head.use_filter:
            out["filter_logits"] = self.filter(cand)
        return out


def like_lai_jax(setup: Any, params: Mapping[str, Any], attn_implementation: str = "sdpa", device: Any = None
                 ) -> TorchLAINet:
    """The torch twin of `setup.model` (a `lai_jax.build.Setup`'s NER LAINet) holding `params`, in train mode,
    on `device`.

    The BertModel is built from the lai-jax encoder config (sizes, dropout probabilities; every weight is then
    copied from `params`), so any encoder lai-jax runs, `random:` ones included, has a twin.
    """
    from lai_jax.hf_import import hf_config_dict
    from transformers import BertConfig, BertModel

    fields = {k: v for k, v in hf_config_dict(setup.model.bert).items() if k not in ("model_type", "architectures")}
    config = BertConfig(**fields, attn_implementation=attn_implementation)
    tmodel = TorchLAINet(BertModel(config, add_pooling_layer=False), setup.head)
    copy_flax_params(tmodel, params)
    return tmodel.to(device).train() if device is not None else tmodel.train()


# -------------------------------------------------------------------------------------------- loss
def _xent(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -torch.gather(F.log_softmax(logits, dim=-1), -1, labels[..., None])[..., 0]


def ner_loss(out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], use_gold_filter: bool
             ) -> tuple[dict, dict]:
    """`lai_jax.models.ner_loss` at its defaults: L_filter and L_span as (sums, counts); both counts are the
    real candidates (`span_loss_norm="candidates"`), the gate is the filter's 0.5 decision."""
    real = batch["cand_mask"] & (batch["weight"][:, None] > 0)
    labels = batch["labels"]
    is_entity = labels > 0
    sums, counts = {}, {}
    if "filter_logits" in out:
        sums["filter"] = (_xent(out["filter_logits"], is_entity.long()) * real).sum()
        counts["filter"] = real.sum()
        predicted = out["filter_logits"].detach().argmax(-1) == 1
        keep = real & (is_entity if use_gold_filter else predicted)
    else:
        keep = real
    sums["span"] = (_xent(out["logits"], labels) * keep).sum()
    counts["span"] = real.sum()
    return sums, counts


def ner_objective(out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], use_gold_filter: bool
                  ) -> tuple[torch.Tensor, dict]:
    """Sum over terms of sum / max(count, 1), as `lai_jax.steps.train_step` on one device."""
    sums, counts = ner_loss(out, batch, use_gold_filter)
    terms = {k: sums[k] / counts[k].clamp_min(1) for k in sums}
    return sum(terms.values()), terms


# ----------------------------------------------------------------------------------- weight copying
def _t(x: Any, transpose: bool = False) -> torch.Tensor:
    a = np.asarray(x, np.float32)
    return torch.from_numpy(np.array(a.T if transpose else a, order="C"))  # a writable copy


def _dense(linear: nn.Linear, p: Mapping[str, Any]) -> None:
    """flax Dense {kernel [in, out], bias} -> torch Linear (weight [out, in])."""
    linear.weight.copy_(_t(p["kernel"], transpose=True))
    linear.bias.copy_(_t(p["bias"]))


def _copy_encoder(bert: nn.Module, params: Mapping[str, Any]) -> None:
    """lai-jax encoder params -> the BertModel, through the importer's own name table (inverse of it)."""
    from lai_jax.encoder import BertConfig
    from lai_jax.hf_import import _hf_names  # the importer's table is the one source of names

    cfg = bert.config
    jcfg = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                      num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                      max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size)
    state = bert.state_dict()
    for leaf in _hf_names(jcfg):
        node = params
        for part in leaf.path:
            node = node[part]
        state[leaf.hf_key].copy_(_t(node, transpose=leaf.transpose))


def head_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The head part of a `LAINet` params tree: under "heads" if the model nests its heads there, else top level."""
    return params["heads"] if "heads" in params else params


@torch.no_grad()
def copy_flax_params(tmodel: TorchLAINet, params: Mapping[str, Any], include_encoder: bool = True) -> None:
    """Copy a lai-jax `LAINet` (NER) params tree (the dict under {"params": ...}) into `tmodel`.

    Head parameters always; the encoder too unless `include_encoder` is False (then the BertModel keeps
    the weights it was loaded with, which equal a fresh lai-jax state's encoder).
    """
    encoder_params, params = params.get("encoder"), head_params(params)
    _dense(tmodel.span_proj, params["span_proj"])
    _dense(tmodel.classifier, params["classifier"])
    if tmodel.head.use_filter:
        _dense(tmodel.filter, params["filter"])
    if tmodel.use_graph:
        _dense(tmodel.anno_proj, params["anno_proj"])
        g = params["g4cn"]
        _dense(tmodel.g4cn.gauss, g["gauss"])
        for i, block in enumerate(tmodel.g4cn.blocks):
            bp = g[f"block_{i}"]
            for l, (kernel, bias) in enumerate(zip(block.kernels, block.biases)):
                kernel.copy_(_t(bp[f"kernel_{l}"]))
                bias.copy_(_t(bp[f"bias_{l}"]))
            _dense(block.out, bp["out"])
    if include_encoder:
        _copy_encoder(tmodel.bert, encoder_params)


# --------------------------------------------------------------------------------------- optimiser
def make_optimizer(tmodel: TorchLAINet, optim_cfg: Any, total_steps: int, fused: Optional[bool] = None
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """`lai_jax.steps.make_optimizer` in torch: AdamW with encoder / head learning rates, weight decay on
    kernels and embeddings only, linear warm-up then linear decay. (Global-norm clipping is applied by the
    step, `train_step`.)"""
    groups: dict[tuple[str, bool], list] = {}
    for name, p in tmodel.named_parameters():
        part = "encoder" if name.startswith("bert.") else "head"
        decay = p.ndim > 1 and "LayerNorm" not in name
        groups.setdefault((part, decay), []).append(p)
    lr = {"encoder": optim_cfg.encoder_learning_rate, "head": optim_cfg.learning_rate}
    param_groups = [{"params": ps, "lr": lr[part], "weight_decay": optim_cfg.weight_decay if decay else 0.0}
                    for (part, decay), ps in groups.items()]
    # optax.adamw defaults: b1 0.9, b2 0.999, eps 1e-8 (torch: same).
    opt = torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    warmup = max(1, int(total_steps * optim_cfg.warmup_ratio))
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        return step / warmup if step < warmup else max(0.0, 1.0 - (step - warmup) / decay_steps)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(tmodel: TorchLAINet, opt: torch.optim.Optimizer, sched: Any, batch: Mapping[str, torch.Tensor],
               use_gold_filter: bool, grad_clip: float = 1.0, autocast: Optional[torch.dtype] = None
               ) -> dict[str, float]:
    """Forward, loss, backward, global-norm clipping, AdamW update (the torch side of the benchmark).

    `autocast`: run forward and loss under `torch.autocast` in that dtype (float32 weights and gradients).
    """
    opt.zero_grad(set_to_none=True)
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        loss, _ = ner_objective(tmodel(batch), batch, use_gold_filter)
    loss.backward()
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(tmodel.parameters(), grad_clip)
    else:
        grad_norm = torch.zeros(())
    opt.step()
    sched.step()
    return {"loss": loss.detach(), "grad_norm": grad_norm}
