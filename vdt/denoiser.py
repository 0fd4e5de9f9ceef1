"""The bridge from a VDT network to the diffusion's ``model_fn(x_in, t)``.

The diffusion sees every conditioning mode the same way: a full clip ``x_in`` (B, T, C, H, W)
that holds clean frames where mask = 0 and noisy frames where mask = 1, and an output of the
same length. This adapter wires the three modes into that one interface:

- ``token_concat``: the network takes the whole clip as one sequence. Nothing to do.
- ``cross_attn`` / ``adaln``: the given frames are split off as the condition and the network
  sees only the frames to generate. Its output is scattered back into a full-length tensor
  (zeros at the given frames, which the masked loss and the sampler ignore).

So all three modes train and sample on the same data, the same frame count and the same task.
"""

import torch

from vdt.masks import frame_mask


class Denoiser:
    """Calls ``model`` as the diffusion expects, for one batch's mask (and labels)."""

    def __init__(self, model, conditioning: str, mask: torch.Tensor, y=None, guidance: float = 1.0,
                 null_label: int | None = None):
        self.model, self.conditioning, self.y = model, conditioning, y
        self.guidance, self.null_label = guidance, null_label
        self.gen_frames = None
        if conditioning != "token_concat":
            gen = frame_mask(mask)  # (B, T) bool: frame fully generated
            if not bool((gen == gen[:1]).all()):
                raise ValueError(f"conditioning={conditioning!r} needs the same given frames in every sample")
            self.gen_frames = gen[0].nonzero().squeeze(1)
            self.given_frames = (~gen[0]).nonzero().squeeze(1)

    def _net(self, x_in, t, y):
        if self.gen_frames is None:
            return self.model(x_in, t, y=y)
        cond = x_in[:, self.given_frames]  # (B, k, C, H, W) clean
        out = self.model(x_in[:, self.gen_frames], t, cond=cond, y=y)  # (B, T - k, C', H, W)
        full = out.new_zeros(out.shape[0], x_in.shape[1], *out.shape[2:])
        full[:, self.gen_frames] = out
        return full

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.y is None or self.guidance == 1.0:
            return self._net(x_in, t, self.y)
        # Classifier-free guidance on the prediction (eps, v or x0: at fixed x_t and t each is affine in eps, so
        # guiding it is guiding eps); the variance channels come from the conditional pass.
        both = self._net(torch.cat([x_in, x_in]), torch.cat([t, t]),
                         torch.cat([self.y, torch.full_like(self.y, self.null_label)]))
        cond, uncond = both.chunk(2)
        C = x_in.shape[2]  # the prediction's channels; any after them are the variance's
        pred = uncond[:, :, :C] + self.guidance * (cond[:, :, :C] - uncond[:, :, :C])
        return torch.cat([pred, cond[:, :, C:]], dim=2)
