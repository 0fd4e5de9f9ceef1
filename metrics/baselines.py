"""Trivial predictions of a task's generated region, scored beside the model on the same test clips.

A number such as "PSNR 12 dB" means little alone: on mostly black clips, filling the unknown region with
black may score higher. ``metrics/evaluate.py`` scores these fills with the model's own frame protocol and
stores them in ``eval.json`` under each task's ``baselines``; the report prints them under the results.

Fills stay in the data's range ([-1, 1]); map them to [0, 1] to score them like the model, e.g. on the
generated region with ``metrics.region.score_region((fill + 1) / 2, (real + 1) / 2, pixel_mask)``.

- ``black_fill``: every generated pixel black, the given pixels kept.
- ``nearest_given_frame``: every generated pixel copied from the nearest frame of the same video that has
  nothing generated (the earlier one on a tie), the given pixels kept. For prediction this is "copy the
  last given frame". Undefined, so left out, when some video has no fully given frame.
"""

import torch


def nearest_given(gen: torch.Tensor) -> torch.Tensor | None:
    """(N, T) bool frames with anything generated -> (N, T) index of the nearest fully given frame, or None."""
    N, T = gen.shape
    if bool(gen.all(dim=1).any()):
        return None
    t = torch.arange(T)
    dist = (t[:, None] - t[None, :]).abs().expand(N, T, T).clone()  # (N, target frame, source frame)
    dist.masked_fill_(gen[:, None, :], T + 1)  # a partly generated frame is no source
    return dist.argmin(dim=-1)  # ties: the first minimum, the earlier frame


def baseline_fills(real: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
    """{name: (1, N, T, C, H, W) fake} for real (N, T, C, H, W) in [-1, 1] and pixel_mask (N, T, H, W), 1 = generate."""
    m = pixel_mask.bool().unsqueeze(2)  # (N, T, 1, H, W)
    fills = {"black_fill": torch.where(m, torch.full_like(real, -1.0), real)}
    idx = nearest_given(pixel_mask.flatten(2).any(-1))
    if idx is not None:
        source = torch.gather(real, 1, idx[:, :, None, None, None].expand_as(real))  # (N, T, C, H, W)
        fills["nearest_given_frame"] = torch.where(m, source, real)
    return {name: fake.unsqueeze(0) for name, fake in fills.items()}
