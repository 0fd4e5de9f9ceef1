"""An independent re-implementation of the OFFICIAL VDT (RERV/VDT ``models.py``, video mode), for tests and benchmarks.

It keeps the official module names, so its ``state_dict()`` has the official checkpoint layout
(``x_embedder.proj.weight``, ``blocks.0.attn.qkv.weight``, ``blocks.0.temporal_fc.weight``, ...), and the
official forward order, rearranges included: tokens live as ((b t), n, d), temporal attention rearranges
them to ((b n), t, d) and back, and every modulation rearranges to (b, (t n), d) and back. The timm
pieces (PatchEmbed, Attention, Mlp) are rebuilt in plain torch with timm's attribute names, and attention
goes through ``F.scaled_dot_product_attention`` as timm's fused path does.

This file is the oracle of ``tests/test_official.py`` and the baseline of ``benchmarks/bench_model_speed.py``;
the package never imports it.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def modulate(x, shift, scale, T):
    """adaLN modulation, one (shift, scale) per video, applied through the official rearranges."""
    x = rearrange(x, "(b t) n d -> b (t n) d", t=T)
    x = x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    return rearrange(x, "b (t n) d -> (b t) n d", t=T)


#################################################################################
#                     timm layers, rebuilt with timm's names                    #
#################################################################################

class PatchEmbed(nn.Module):
    """timm PatchEmbed: a conv with kernel = stride = patch, flattened to tokens."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (BT, N, D)


class Attention(nn.Module):
    """timm Attention (fused path): qkv linear, SDPA, output projection."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """timm Mlp: fc1, activation, fc2."""

    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


#################################################################################
#                                   Embedders                                   #
#################################################################################

class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features (cos first, then sin) through a two-layer MLP."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t):
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    """Label table with one extra null row (index num_classes) when label dropout is on."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, labels, train):
        if train and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


#################################################################################
#                                 Block and model                               #
#################################################################################

class VDTBlock(nn.Module):
    """Temporal attention (affine LN, temporal_fc), then adaLN-Zero spatial attention and MLP."""

    def __init__(self, hidden_size, num_heads, mlp_ratio, num_frames):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.num_frames = num_frames
        self.temporal_norm1 = nn.LayerNorm(hidden_size)  # affine, default eps 1e-5, as in the official code
        self.temporal_attn = Attention(hidden_size, num_heads)
        self.temporal_fc = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        T = self.num_frames
        B = x.shape[0] // T
        N = x.shape[1]
        xt = rearrange(x, "(b t) n d -> (b n) t d", t=T)
        res = rearrange(self.temporal_attn(self.temporal_norm1(xt)), "(b n) t d -> (b t) n d", b=B, n=N)
        x = rearrange(xt, "(b n) t d -> (b t) n d", b=B, n=N) + self.temporal_fc(res)

        attn = rearrange(self.attn(modulate(self.norm1(x), shift_msa, scale_msa, T)), "(b t) n d -> b (t n) d", t=T)
        x = x + rearrange(gate_msa.unsqueeze(1) * attn, "b (t n) d -> (b t) n d", t=T)
        mlp = rearrange(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp, T)), "(b t) n d -> b (t n) d", t=T)
        return x + rearrange(gate_mlp.unsqueeze(1) * mlp, "b (t n) d -> (b t) n d", t=T)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a linear to patch pixels."""

    def __init__(self, hidden_size, patch_size, out_channels, num_frames):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.num_frames = num_frames

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale, self.num_frames))


class OfficialVDT(nn.Module):
    """The official VDT in video mode; ``forward(x, t, y)`` with x (B, T, C, H, W)."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1, learn_sigma=True, num_frames=16):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # Fixed sin-cos tables, stored as frozen parameters (so they are in the official state dict).
        self.pos_embed = nn.Parameter(torch.zeros(1, self.x_embedder.num_patches, hidden_size), requires_grad=False)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, hidden_size), requires_grad=False)
        self.time_drop = nn.Dropout(p=0)
        self.blocks = nn.ModuleList(VDTBlock(hidden_size, num_heads, mlp_ratio, num_frames) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, num_frames)
        self.initialize_weights()

    def initialize_weights(self):
        for m in self.modules():  # xavier linears, zero biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        D = self.pos_embed.shape[-1]
        grid = int(self.x_embedder.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(D, grid)).float().unsqueeze(0))
        self.time_embed.data.copy_(
            torch.from_numpy(sincos_1d(D, np.arange(self.num_frames, dtype=np.float32))).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for p in (*self.final_layer.adaLN_modulation[-1].parameters(), *self.final_layer.linear.parameters()):
            nn.init.zeros_(p)

    def unpatchify(self, x):
        """((b t), n, p*p*c) -> ((b t), c, H, W), channel fastest inside a patch."""
        p, c = self.patch_size, self.out_channels
        h = int(x.shape[1] ** 0.5)
        return rearrange(x, "bt (h w) (p q c) -> bt c (h p) (w q)", h=h, p=p, q=p, c=c)

    def forward(self, x, t, y):
        B, T, C, H, W = x.shape
        x = self.x_embedder(x.reshape(B * T, C, H, W)) + self.pos_embed  # ((b t), N, D)
        x = rearrange(x, "(b t) n d -> (b n) t d", b=B) + self.time_embed
        x = rearrange(self.time_drop(x), "(b n) t d -> (b t) n d", b=B)
        c = self.t_embedder(t) + self.y_embedder(y, self.training)  # (B, D)
        for block in self.blocks:
            x = block(x, c)
        x = self.unpatchify(self.final_layer(x, c))  # ((b t), 2C, H, W)
        return x.view(B, T, *x.shape[1:])


#################################################################################
#                        Sine/cosine positional embeddings                      #
#################################################################################

def sincos_1d(dim, pos):
    """(M,) positions -> (M, dim): sin of every frequency, then cos (float64, like the official numpy code)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, grid_size):
    """(grid_size**2, dim), row-major tokens: the first half encodes the column (w), the second the row (h)."""
    w, h = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    return np.concatenate([sincos_1d(dim // 2, w), sincos_1d(dim // 2, h)], axis=1)
