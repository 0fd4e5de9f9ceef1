"""VDT: the Video Diffusion Transformer (Lu et al., ICLR 2024), with three ways to feed clean condition frames.

Reads bottom-up, like DiT's models.py: helpers, embedders, block, final layer, the model, positional
embeddings, the FLOP count. Tokens are kept as (B, T, N, D) from embedding to output, so both attentions take
their heads as views of that layout: spatial attention over N per frame, temporal attention over T per
spatial location. Module names follow the official ``models.py`` (RERV/VDT), so an official state dict
maps onto ``VDT`` key for key (see vdt/official.py).

Sizes come from ModelConfig; its presets (vdt.config.PRESETS) are VDT-S/2 and VDT-L/2 as in the official
code, and cpu-tiny, cpu-small for CPU runs.

Letters: B batch, T frames, k condition frames, C channels, H = W frame side, p patch, h = w = H / p,
N = h * w tokens per frame, D hidden, nh heads, hd = D / nh.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from vdt.config import ModelConfig
from vdt.ops import attention, gelu_tanh

#################################################################################
#                                    Helpers                                    #
#################################################################################


def modulated_linear(x, linear, shift, scale):
    """linear(x * (1 + scale) + shift) for (B, L, Din) x and one (shift, scale) (B, Din) per video.

    The modulation is folded into a per-video weight, W * (1 + scale), and bias, W @ shift + b: the same
    numbers, but the (B, L, Din) activation is read once by a batched matmul instead of being rewritten.
    """
    w = linear.weight * (1 + scale).unsqueeze(1)  # (B, Dout, Din)
    b = F.linear(shift, linear.weight, linear.bias).unsqueeze(1)  # (B, 1, Dout)
    return torch.baddbmm(b, x, w.transpose(1, 2))  # (B, L, Dout)


def gated_linear(x, linear, gate):
    """gate * linear(x) for (B, L, Din) x and one gate (B, Dout) per video, the gate folded into the weight."""
    w = linear.weight * gate.unsqueeze(2)  # (B, Dout, Din)
    b = (linear.bias * gate).unsqueeze(1)  # (B, 1, Dout)
    return torch.baddbmm(b, x, w.transpose(1, 2))  # (B, L, Dout)


def patchify(x, p):
    """(B, T, C, H, W) -> (B, T, N, p*p*C), channel fastest inside a patch (the official output order)."""
    return rearrange(x, "b t c (h p) (w q) -> b t (h w) (p q c)", p=p, q=p)


def unpatchify(x, p, h):
    """(B, T, N, p*p*C) -> (B, T, C, H, W): the inverse of patchify."""
    return rearrange(x, "b t (h w) (p q c) -> b t c (h p) (w q)", h=h, p=p, q=p)


#################################################################################
#                  Embedding layers for patches, timesteps, labels              #
#################################################################################


class PatchEmbed(nn.Module):
    """Frames to tokens: a conv with kernel = stride = p (timm's PatchEmbed), run as a matmul on patches."""

    def __init__(self, patch, channels, hidden):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, hidden, kernel_size=patch, stride=patch)

    def forward(self, x):  # (B, T, C, H, W)
        w = rearrange(self.proj.weight, "d c p q -> d (p q c)")  # the conv weight, in patchify's order
        return F.linear(patchify(x, self.patch), w, self.proj.bias)  # (B, T, N, D)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps to vectors: 256 sinusoidal features (cos, then sin) through a SiLU MLP, as DiT."""

    def __init__(self, hidden, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):  # (B,) int or float
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]  # (B, half)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (B, D)


class LabelEmbedder(nn.Module):
    """Class labels to vectors; row num_classes is the null label, drawn with class_dropout in training."""

    def __init__(self, num_classes, hidden, dropout):
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y, generator=None):  # (B,)
        if self.training and self.dropout > 0:  # classifier-free guidance: learn the null label too
            drop = torch.rand(y.shape[0], device=y.device, generator=generator) < self.dropout
            y = torch.where(drop, self.num_classes, y)
        return self.embedding_table(y)  # (B, D)


class CondEmbedder(nn.Module):
    """Clean condition frames to tokens (cross_attn), or to one pooled vector through an MLP (adaln)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pooled = cfg.conditioning == "adaln"
        self.x_embedder = PatchEmbed(cfg.patch, cfg.channels, cfg.hidden)
        if self.pooled:
            self.mlp = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden))

    def forward(self, cond, pos):  # (B, k, C, H, W), pos (1, k, N, D)
        tokens = self.x_embedder(cond) + pos  # (B, k, N, D)
        if self.pooled:
            return self.mlp(tokens.mean(dim=(1, 2)))  # (B, D)
        return tokens.flatten(1, 2)  # (B, k*N, D)


#################################################################################
#                                 Core VDT block                                #
#################################################################################


class Attention(nn.Module):
    """Multi-head attention parameters, named like timm's (qkv, proj); the block decides the layout."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)


class CrossAttention(nn.Module):
    """Noisy tokens (queries) attend to all condition tokens (keys and values)."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.proj = nn.Linear(hidden, hidden)  # zero-init: the branch starts closed

    def forward(self, x, ctx):  # (B, L, D), (B, Lc, D)
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.kv(ctx), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        o = F.scaled_dot_product_attention(q, k, v)  # (B, nh, L, hd)
        return self.proj(rearrange(o, "b h l d -> b l (h d)"))  # (B, L, D)


class Mlp(nn.Module):
    """fc1, tanh-GELU, fc2 (timm's names)."""

    def __init__(self, hidden, ratio):
        super().__init__()
        self.fc1 = nn.Linear(hidden, int(hidden * ratio))
        self.fc2 = nn.Linear(int(hidden * ratio), hidden)


class VDTBlock(nn.Module):
    """Temporal attention (affine LN, temporal_fc, no adaLN), then adaLN-Zero spatial attention
    [, cross-attention to condition tokens], then an adaLN-Zero MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden
        self.temporal_norm1 = nn.LayerNorm(D)  # affine, eps 1e-5: the official temporal norm
        self.temporal_attn = Attention(D, cfg.heads)
        self.temporal_fc = nn.Linear(D, D)
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, cfg.heads)
        if cfg.conditioning == "cross_attn":
            self.cross_norm = nn.LayerNorm(D, eps=1e-6)
            self.cross_attn = CrossAttention(D, cfg.heads)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(D, cfg.mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

    def forward(self, x, c, ctx=None):  # x (B, T, N, D), c (B, D), ctx (B, k*N, D) or None
        B, T, N, D = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + self.temporal(self.temporal_norm1(x))
        a = self.spatial(modulated_linear(self.norm1(x).view(B, T * N, D), self.attn.qkv, shift_msa, scale_msa), T)
        x = x + gated_linear(a, self.attn.proj, gate_msa).view(B, T, N, D)
        if ctx is not None:
            x = x + self.cross_attn(self.cross_norm(x).view(B, T * N, D), ctx).view(B, T, N, D)
        return x + self.ffn(self.norm2(x).view(B, T * N, D), shift_mlp, scale_mlp, gate_mlp).view(B, T, N, D)

    def ffn(self, x, shift, scale, gate):
        """gate * fc2(GELU_tanh(fc1(x * (1 + scale) + shift))): (B, L, D) -> (B, L, D)."""
        h = modulated_linear(x, self.mlp.fc1, shift, scale)  # (B, L, rD)
        return gated_linear(gelu_tanh(h), self.mlp.fc2, gate)

    def temporal(self, x):
        """Attention over T at every spatial location, then proj and temporal_fc: (B, T, N, D) -> same."""
        B, T, N, D = x.shape
        nh = self.temporal_attn.heads
        # q, k, v from three slices of the one qkv weight, so each is a dense (B, T, N, D) and the
        # heads of every location are a strided view (B, N*nh, T, hd): no copies before attention.
        qkv = self.temporal_attn.qkv
        q, k, v = (F.linear(x, w, b).view(B, T, N * nh, D // nh).transpose(1, 2)
                   for w, b in zip(qkv.weight.chunk(3), qkv.bias.chunk(3), strict=True))
        o = attention(q, k, v).transpose(1, 2).reshape(B, T, N, D)  # (B, N*nh, T, hd) -> (B, T, N, D)
        # temporal_fc(proj(o)) is one affine map: compose the weights (D^3 work) instead of two token passes.
        fc, proj = self.temporal_fc, self.temporal_attn.proj
        return F.linear(o, fc.weight @ proj.weight, F.linear(proj.bias, fc.weight, fc.bias))

    def spatial(self, qkv, T):
        """Attention over the N tokens of each frame: qkv (B, T*N, 3D) -> (B, T*N, D)."""
        # Heads as a strided view of qkv (no copy); the frames of a video are the attention batch.
        q, k, v = rearrange(qkv, "b (t n) (three h d) -> three (b t) h n d", t=T, three=3, h=self.attn.heads)
        o = attention(q, k, v)  # (B*T, nh, N, hd), heads-last in memory
        return rearrange(o, "(b t) h n d -> b (t n) (h d)", t=T)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) and a linear to p*p*C_out values per token."""

    def __init__(self, hidden, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):  # (B, T, N, D), (B, D)
        B, T, N, D = x.shape
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return modulated_linear(self.norm_final(x).view(B, T * N, D), self.linear, shift, scale).view(B, T, N, -1)


#################################################################################
#                                   The model                                   #
#################################################################################


class VDT(nn.Module):
    """Denoiser for (B, T, C, H, W) videos; returns (B, T, C_out, H, W), C_out = 2C with learned variance."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, p = cfg.hidden, cfg.patch
        self.out_channels = 2 * cfg.channels if cfg.learn_sigma else cfg.channels
        # token_concat: the condition frames are inside x. Other modes: they come first on one timeline.
        self.cond_frames = 0 if cfg.conditioning == "token_concat" else cfg.cond_frames
        self.x_embedder = PatchEmbed(p, cfg.channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout) if cfg.num_classes > 0 else None
        self.cond_embedder = CondEmbedder(cfg) if self.cond_frames else None
        # Fixed sin-cos tables, derived from the config (so not saved): positions in a frame, frames in time.
        self.register_buffer("pos_embed", sincos_2d(D, cfg.size // p).float().unsqueeze(0), persistent=False)
        frames = torch.arange(self.cond_frames + cfg.frames, dtype=torch.float64)
        self.register_buffer("time_embed", sincos_1d(D, frames).float().unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(VDTBlock(cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        # Linear layers: xavier-uniform weights, zero biases (as DiT).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # Patch embeddings: the conv initialised like a linear on the flattened patch.
        for pe in (m for m in self.modules() if isinstance(m, PatchEmbed)):
            nn.init.xavier_uniform_(pe.proj.weight.view(pe.proj.weight.shape[0], -1))
            nn.init.zeros_(pe.proj.bias)
        # Timestep MLP and label table: N(0, 0.02).
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        # adaLN-Zero: every block's shift, scale and gate start at 0, so each block starts as the identity
        # on its adaLN branches. Cross-attention output projections start at 0 too (the branch starts closed).
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if hasattr(block, "cross_attn"):
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        # Output layer: zero modulation and zero linear, so the model predicts exactly 0 at init.
        for param in (*self.final_layer.adaLN_modulation[-1].parameters(), *self.final_layer.linear.parameters()):
            nn.init.zeros_(param)

    def positions(self, start, count):
        """Spatial + temporal sin-cos embedding for frames start..start+count-1: (1, count, N, D)."""
        return self.time_embed[:, start:start + count, None] + self.pos_embed[:, None]

    def forward(self, x, t, cond=None, y=None, generator=None):
        """x (B, T, C, H, W) noisy frames; t (B,) timesteps; cond (B, k, C, H, W) clean frames
        (cross_attn, adaln); y (B,) labels (num_classes > 0; may be omitted when num_classes == 1).
        generator: the RNG of label dropout in training (default: torch's global RNG)."""
        y = self.check_inputs(x, t, cond, y)
        B, T, C, H, W = x.shape
        k = self.cond_frames
        x = self.x_embedder(x) + self.positions(k, T)  # (B, T, N, D)
        c = self.t_embedder(t)  # (B, D)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y, generator)
        ctx = None
        if self.cond_embedder is not None:
            ctx = self.cond_embedder(cond, self.positions(0, k))  # (B, k*N, D) or, pooled, (B, D)
            if self.cond_embedder.pooled:
                c, ctx = c + ctx, None
        for block in self.blocks:
            x = block(x, c, ctx)  # (B, T, N, D)
        x = self.final_layer(x, c)  # (B, T, N, p*p*C_out)
        return unpatchify(x, self.cfg.patch, H // self.cfg.patch)  # (B, T, C_out, H, W)

    def check_inputs(self, x, t, cond, y):
        """Raise a ValueError naming the expected shape; return y (zeros when num_classes == 1 and y is None)."""
        cfg = self.cfg
        frame = (cfg.channels, cfg.size, cfg.size)
        _expect("x", x, 5, (cfg.frames, *frame), "(B, frames, channels, size, size)")
        B = x.shape[0]
        _expect("t", t, 1, (), "(B,)", B)
        if self.cond_frames:
            if cond is None:
                raise ValueError(f"cond: conditioning={cfg.conditioning!r} needs the clean condition frames, "
                                 f"(B, {self.cond_frames}, {', '.join(map(str, frame))})")
            _expect("cond", cond, 5, (self.cond_frames, *frame), "(B, cond_frames, channels, size, size)", B)
        elif cond is not None:
            raise ValueError("cond: conditioning='token_concat' takes the condition frames inside x; pass cond=None")
        if cfg.num_classes == 0:
            if y is not None:
                raise ValueError("y: the model has num_classes=0; pass y=None")
            return None
        if y is None:
            if cfg.num_classes > 1:
                raise ValueError(f"y: num_classes={cfg.num_classes} needs labels (B,), {cfg.num_classes} = null")
            return torch.zeros(B, dtype=torch.long, device=x.device)  # one class: the label is implied
        _expect("y", y, 1, (), "(B,)", B)
        return y


def _expect(name, tensor, ndim, tail, pattern, batch=None):
    shape = tuple(tensor.shape)
    want = (batch if batch is not None else "B", *tail)
    if len(shape) != ndim or shape[1:] != tuple(tail) or (batch is not None and shape[0] != batch):
        raise ValueError(f"{name}: expected shape {pattern} = ({', '.join(map(str, want))}), got {shape}")


#################################################################################
#                        Sine/cosine positional embeddings                      #
#################################################################################


def sincos_1d(dim, pos):
    """(M,) positions -> (M, dim) float64: sin of every frequency, then cos (MAE's table)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim, side):
    """(side*side, dim) for row-major tokens: the first half encodes the column (w), the second the row (h)."""
    coords = torch.arange(side, dtype=torch.float64)
    h, w = torch.meshgrid(coords, coords, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, w.flatten()), sincos_1d(dim // 2, h.flatten())], dim=1)


#################################################################################
#                                     FLOPs                                     #
#################################################################################


def count_flops(cfg: ModelConfig, batch: int) -> float:
    """Model FLOPs of one training step (forward + backward) on `batch` videos, for MFU.

    As nanoGPT's estimate_mfu (after PaLM, appendix B): backward costs twice the forward, so a step is
    3x the forward, and a matmul with P weights costs 2P FLOPs per token in the forward:
        per noisy token:  6 * P_tok + 12 * D * (T + N [+ k*N])  per block
    P_tok counts the weights applied to every token: per block temporal qkv + proj + temporal_fc
    (5 D^2), spatial qkv + proj (4 D^2), MLP (2 r D^2), cross-attention q + proj (2 D^2); and once,
    the patch embedding (p^2 C D) and the output linear (D p^2 C_out). The attention term is QK^T and
    AV, 2 * 2 * L * D per query token forward for a sequence of length L: temporal over T, spatial
    over N, cross over the k*N condition tokens. Condition tokens add their patch embedding and, in
    cross_attn, the key/value projection (2 D^2 per block). Per-video work (adaLN, timestep MLP) and
    elementwise ops are left out.
    """
    D, p, C, r = cfg.hidden, cfg.patch, cfg.channels, cfg.mlp_ratio
    N = (cfg.size // p) ** 2
    k = 0 if cfg.conditioning == "token_concat" else cfg.cond_frames
    c_out = 2 * C if cfg.learn_sigma else C
    cross = cfg.conditioning == "cross_attn"
    block = (9 + 2 * r + 2 * cross) * D * D
    p_tok = cfg.depth * block + p * p * C * D + D * p * p * c_out
    attn = cfg.depth * 2 * 2 * D * (cfg.frames + N + (k * N if cross else 0))  # forward, per noisy token
    noisy = batch * cfg.frames * N
    cond_tok = batch * k * N
    forward = noisy * (2 * p_tok + attn) + cond_tok * 2 * (p * p * C * D + (cfg.depth * 2 * D * D if cross else 0))
    return 3.0 * forward

