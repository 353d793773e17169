"""G4CN: Gaussian-Graph-Generator based GCN (LAI-Net's second-round interaction, SPEC §6).

Every node (candidate span or label annotation) gets, per head, a diagonal Gaussian
N(mu, diag sigma^2) from one Dense layer; the KL divergence between node Gaussians is the
(asymmetric) edge weight of a dense graph; densely connected GCN blocks (GDPNet's
``MultiGraphConvLayer``, DCGCN style) then mix the nodes over that graph.

Design choices (all documented where they are made):

* Direction: ``A[h, i, j] = KL(N_i || N_j)`` as the paper writes it, and row ``i`` of ``A`` is
  what node ``i`` aggregates (``(A X)_i = sum_j A_ij X_j``). GDPNet's code (``kl_div_gauss`` in
  ``GGG.forward``) fills row ``i`` with ``KL(N_j || N_i)``, i.e. the transpose of ours.
* One adjacency per forward pass: like GDPNet (``GGG`` builds ``attn_adj_list`` once from its
  input and its first GCN blocks all reuse it), the graph is generated once from the G4CN input
  nodes and shared by all ``gcn_layers`` blocks.
* Edge weights for ``edge="kl"`` are the raw KL values, as in GDPNet. They are unbounded, but the
  GCN divides every row by ``rowsum(A) + 1`` so each node takes a convex-like combination of
  itself and its neighbours; with ``sigma >= sigma_eps = 1e-4`` a KL term is at most about
  ``(mu_i - mu_j)^2 * 1e8``, far from float32's 3.4e38 for any sane ``mu``. ``"exp_neg_kl"``
  maps edges to ``exp(-KL)`` in (0, 1] instead.
* Padding: masked nodes get no edges in or out (their rows and columns of ``A`` are zero, so they
  do not enter row sums either), their inputs are zeroed before the Gaussian generator (finite
  ``mu``/``sigma`` keep gradients finite) and their outputs are zero.
* The KL matrix and Gaussians are always computed in float32 (or wider), whatever ``dtype``, and so is the
  aggregation over the adjacency (its row sums and ``A X``); the blocks' other matmuls run in ``dtype``.
"""

from __future__ import annotations

from typing import Any, Optional

import jax.numpy as jnp
from flax import linen as nn

from lai_jax.dropout import Dropout

ALLOWED_HEADS = (1, 2, 3, 4, 6)
MAX_GCN_LAYERS = 5
EDGES = ("kl", "exp_neg_kl")


def gaussian_kl_matrix(
    mu: jnp.ndarray, sigma: jnp.ndarray, mask: Optional[jnp.ndarray] = None
) -> jnp.ndarray:
    """All-pairs KL divergence between diagonal Gaussians.

    Args:
      mu, sigma: ``[..., n, g]`` means and standard deviations (sigma > 0).
      mask: optional ``[..., n]`` bool (broadcastable); only used to centre ``mu`` on the mean
        of the real nodes (see below). It does not zero anything.

    Returns:
      ``[..., n, n]`` with ``out[..., i, j] = KL(N(mu_i, sigma_i^2) || N(mu_j, sigma_j^2))
      = 1/2 sum_k [2 log s_jk - 2 log s_ik + (s_ik^2 + (m_ik - m_jk)^2) / s_jk^2 - 1]``.

    The square is expanded so that only ``[..., n, n]`` arrays are ever formed:
    ``sum_k (s_ik^2 + m_ik^2) p_jk - 2 m_ik (m_jk p_jk)`` is one contraction over ``2g`` (``p =
    1/s^2``) plus per-row and per-column terms. Expanding the square cancels catastrophically
    when ``|mu| >> |mu_i - mu_j|``; KL only depends on ``mu_i - mu_j``, so ``mu`` is first centred
    on its (masked) mean over nodes, which is exact and keeps the cancelling terms small.
    The diagonal is set to exactly 0 and rounding negatives are clamped (KL >= 0).
    """
    mu = jnp.asarray(mu)
    sigma = jnp.asarray(sigma)
    ctype = jnp.promote_types(jnp.result_type(mu, sigma), jnp.float32)
    mu = mu.astype(ctype)
    sigma = sigma.astype(ctype)
    n = mu.shape[-2]

    if mask is None:
        centre = jnp.mean(mu, axis=-2, keepdims=True)
    else:
        w = jnp.broadcast_to(jnp.asarray(mask), mu.shape[:-1]).astype(ctype)[..., None]
        centre = jnp.sum(mu * w, axis=-2, keepdims=True) / jnp.maximum(
            jnp.sum(w, axis=-2, keepdims=True), 1.0
        )
    mu = mu - centre

    var = jnp.square(sigma)
    prec = 1.0 / var
    log_var = 2.0 * jnp.log(sigma)
    # Row factor u_i and column factor v_j: u_i . v_j = sum_k (s_ik^2 + m_ik^2) p_jk - 2 m_ik m_jk p_jk.
    u = jnp.concatenate([var + jnp.square(mu), mu], axis=-1)
    v = jnp.concatenate([prec, -2.0 * mu * prec], axis=-1)
    cross = jnp.einsum("...ik,...jk->...ij", u, v)
    row = -jnp.sum(log_var, axis=-1) - mu.shape[-1]  # [..., n]: -2 log s_i summed, minus g
    col = jnp.sum(log_var + jnp.square(mu) * prec, axis=-1)  # [..., n]: 2 log s_j + m_j^2 p_j
    kl = 0.5 * (cross + row[..., :, None] + col[..., None, :])
    kl = jnp.maximum(kl, 0.0)
    return jnp.where(jnp.eye(n, dtype=bool), jnp.zeros((), ctype), kl)


def build_adjacency(
    mu: jnp.ndarray, sigma: jnp.ndarray, node_mask: jnp.ndarray, edge: str = "kl",
    source_mask: Optional[jnp.ndarray] = None,
) -> jnp.ndarray:
    """Masked multi-head adjacency ``[B, H, n, n]`` from ``mu, sigma: [B, H, n, g]``.

    Row ``i`` is what node ``i`` aggregates; ``A[b, h, i, j]`` is ``KL(N_i || N_j)`` (or its
    ``exp(-.)``), zero wherever ``i`` or ``j`` is a padded node, and wherever node ``j`` is not in
    ``source_mask`` ``[B, n]`` (the nodes others may read; None = every real node).
    """
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    m = node_mask[:, None, :]  # [B, 1, n], shared by all heads
    kl = gaussian_kl_matrix(mu, sigma, mask=m)
    adj = kl if edge == "kl" else jnp.exp(-kl)
    pair = m[..., :, None] & m[..., None, :]
    if source_mask is not None:
        pair = pair & source_mask[:, None, None, :].astype(bool)
    return jnp.where(pair, adj, jnp.zeros((), adj.dtype))


def sublayer_widths(hidden: int, sublayers: int) -> list[int]:
    """Widths of the densely connected sub-layers; they add up to ``hidden``.

    GDPNet uses ``hidden // sublayers`` for every sub-layer (then its residual needs
    divisibility); spreading the remainder over the first sub-layers lifts that restriction and
    is identical whenever ``sublayers`` divides ``hidden``.
    """
    base, rem = divmod(hidden, sublayers)
    return [base + (1 if i < rem else 0) for i in range(sublayers)]


class G4CNBlock(nn.Module):
    """One multi-head DCGCN block (GDPNet ``MultiGraphConvLayer``).

    Per head ``h`` and sub-layer ``l`` with growing input ``X_l = [X_0; x_1; ...; x_l]``:
    ``x_{l+1} = ReLU((W_l(A_h X_l) + W_l(X_l)) / (rowsum(A_h) + 1))``, the same ``W_l``
    (weights and bias) on both terms, so its bias is counted twice as in GDPNet. Because ``W_l``
    is affine, this is computed as ``A_h (X_l K_l) + X_l K_l + 2 b_l``: the ``n x n`` product then
    runs over the narrow sub-layer width instead of the growing input width (same value).
    Head output = concat of (dropped-out) sub-layer outputs + block input; heads are
    concatenated and a Dense maps ``heads * d`` back to ``d``.
    """

    hidden: int
    sublayers: int
    heads: int
    dropout: float = 0.1
    dropout_bits: int = 8  # see lai_jax.dropout
    zero_init_out: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        adj: jnp.ndarray,
        denom: jnp.ndarray,
        node_mask: jnp.ndarray,
        deterministic: bool = True,
    ) -> jnp.ndarray:
        """x ``[B, n, d]``, adj ``[B, H, n, n]``, denom ``[B, H, n, 1]`` -> ``[B, n, d]``."""
        d, H = self.hidden, self.heads
        x = x.astype(self.dtype)
        # The KL adjacency, its row sums and the aggregation over it stay float32 whatever `dtype`: KL edges are
        # unbounded and bf16 keeps 8 bits, so a row's small edges would vanish next to its large ones.
        adj = adj.astype(jnp.float32)
        denom = denom.astype(jnp.float32)
        # Per-head kernels: fan-in is the sub-layer input width, as for a torch/flax Dense.
        kinit = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        cache: list[jnp.ndarray] = []  # x_1..x_l, each [B, H, n, w]; X_0 = x is shared by heads
        outs: list[jnp.ndarray] = []
        for l, w in enumerate(sublayer_widths(d, self.sublayers)):
            in_dim = d + sum(c.shape[-1] for c in cache)
            kernel = self.param(f"kernel_{l}", kinit, (H, in_dim, w), jnp.float32)
            bias = self.param(f"bias_{l}", nn.initializers.zeros, (H, w), jnp.float32)
            kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
            # X_l K_l with X_l = [X_0; x_1; ...]: split K_l by rows instead of concatenating,
            # so X_0 never has to be broadcast to every head.
            xw = jnp.einsum("bnc,hcw->bhnw", x, kernel[:, :d])
            off = d
            for c in cache:
                xw = xw + jnp.einsum("bhnc,hcw->bhnw", c, kernel[:, off : off + c.shape[-1]])
                off += c.shape[-1]
            xw32 = xw.astype(jnp.float32)
            pre = jnp.einsum("bhij,bhjw->bhiw", adj, xw32) + xw32 + 2.0 * bias[None, :, None, :]
            g = nn.relu(pre / denom).astype(self.dtype)
            cache.append(g)  # the next sub-layer sees the un-dropped output, as in GDPNet
            outs.append(Dropout(self.dropout, self.dropout_bits)(g, deterministic=deterministic))
        y = jnp.concatenate(outs, axis=-1) + x[:, None]  # [B, H, n, d], residual per head
        B, _, n, _ = y.shape
        y = jnp.transpose(y, (0, 2, 1, 3)).reshape(B, n, H * d)
        out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
        y = nn.Dense(d, dtype=self.dtype, kernel_init=out_init, name="out")(y)
        return jnp.where(node_mask[..., None], y, jnp.zeros((), y.dtype))


class G4CN(nn.Module):
    """Gaussian Graph Generator + stacked multi-head DCGCN blocks over candidate/annotation nodes.

    Call: ``G4CN(...)(nodes [B, n, d], node_mask [B, n] bool, deterministic)`` -> ``[B, n, d]``;
    the caller forms ``1/2 [H + out]`` and keeps the candidate rows. ``gcn_layers=0`` returns
    ``nodes`` itself (no parameters), so that path is exactly the no-graph model.
    Dropout (rng ``"dropout"``) is applied where GDPNet's ``gcn_drop`` is: on each sub-layer
    output on its way to the block output.
    """

    hidden: int
    gcn_layers: int = 2
    gcn_sublayers: int = 2
    gcn_heads: int = 4
    gauss_dim: int = 1
    edge: str = "kl"
    dropout: float = 0.1
    dropout_bits: int = 8
    sigma_eps: float = 1e-4
    # Zero-initialise the last block's output projection: the graph then starts as a no-op (the caller's
    # 1/2 [H + G4CN(H)] is H/2, the no-graph model up to scale) instead of adding a random projection of
    # the nodes to every candidate, and its contribution is learned from there.
    zero_init_out: bool = False
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        self._validate()
        super().__post_init__()

    def _validate(self) -> None:
        if not 0 <= self.gcn_layers <= MAX_GCN_LAYERS:
            raise ValueError(f"gcn_layers must be in 0..{MAX_GCN_LAYERS}, got {self.gcn_layers}")
        if self.gcn_heads not in ALLOWED_HEADS or self.hidden % self.gcn_heads != 0:
            raise ValueError(
                f"gcn_heads must be one of {ALLOWED_HEADS} and divide hidden={self.hidden}, "
                f"got gcn_heads={self.gcn_heads}"
            )
        if not 1 <= self.gcn_sublayers <= self.hidden:
            raise ValueError(
                f"gcn_sublayers must be in 1..hidden={self.hidden}, got {self.gcn_sublayers}"
            )
        if self.gauss_dim < 1:
            raise ValueError(f"gauss_dim must be >= 1, got {self.gauss_dim}")
        if self.edge not in EDGES:
            raise ValueError(f"edge must be one of {EDGES}, got {self.edge!r}")
        if not self.sigma_eps > 0:
            raise ValueError(f"sigma_eps must be > 0, got {self.sigma_eps}")

    @nn.compact
    def __call__(
        self, nodes: jnp.ndarray, node_mask: jnp.ndarray, deterministic: bool = True,
        source_mask: Optional[jnp.ndarray] = None,
    ) -> jnp.ndarray:
        """nodes ``[B, n, d]`` (candidates then annotations), node_mask ``[B, n]`` -> ``[B, n, d]``.

        ``source_mask`` ``[B, n]``: the nodes whose features others aggregate (None = all real nodes); every
        node still keeps its own features (the GCN's self term).
        """
        if self.gcn_layers == 0:
            return nodes
        if nodes.shape[-1] != self.hidden:
            raise ValueError(f"nodes last dim {nodes.shape[-1]} != hidden {self.hidden}")
        H, g = self.gcn_heads, self.gauss_dim
        node_mask = node_mask.astype(bool)
        x = jnp.where(node_mask[..., None], nodes, jnp.zeros((), nodes.dtype))

        # Gaussian generator, kept in float32 even for low-precision dtype (KL is sensitive).
        gp = nn.Dense(H * 2 * g, dtype=jnp.promote_types(self.dtype, jnp.float32), name="gauss")(
            x.astype(jnp.promote_types(x.dtype, jnp.float32))
        )
        B, n = gp.shape[:2]
        gp = jnp.transpose(gp.reshape(B, n, H, 2, g), (0, 2, 1, 3, 4))  # [B, H, n, 2, g]
        mu = gp[..., 0, :]
        sigma = nn.softplus(gp[..., 1, :]) + self.sigma_eps
        adj = build_adjacency(mu, sigma, node_mask, self.edge, source_mask)  # once, shared by all blocks
        self.sow("intermediates", "adjacency", adj)
        denom = jnp.sum(adj, axis=-1, keepdims=True) + 1.0

        for i in range(self.gcn_layers):
            x = G4CNBlock(
                hidden=self.hidden,
                sublayers=self.gcn_sublayers,
                heads=H,
                dropout=self.dropout,
                dropout_bits=self.dropout_bits,
                zero_init_out=self.zero_init_out and i == self.gcn_layers - 1,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, adj, denom, node_mask, deterministic)
        return x
