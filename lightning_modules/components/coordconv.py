"""CoordConv, AWing's variant (Liu et al., NeurIPS 2018; AWing ``core/coord_conv.py``; IMPLEMENTATION_NOTES §0.4).

A convolution cannot tell where it is in the image; CoordConv tells it by appending coordinate channels to its
input. AWing appends, before the convolution:

- x and y: the column and row of every pixel centre, scaled linearly to [-1, 1] (-1 at the first pixel centre,
  +1 at the last; a size-1 axis is 0);
- r = sqrt(x² + y²) / max r, in [0, 1] (``with_r``);
- the boundary-gated copies x·[B > 0.05] and y·[B > 0.05] (``with_boundary``), B the previous stack's boundary
  map clamped to [0, 1]: where the map says "a facial boundary is here", the convolution sees where "here" is.

Channel order of the convolution's input: ``[input, x, y, (r), (x·gate, y·gate)]``.

Placement in AWing / PropNet (§0.4): the stem's 7x7 stride-2 conv is ``CoordConv2d(3, 64, 7, 2, 3)`` (3 + 3
input channels); each hourglass entrance is ``CoordConv2d(256, 256, 1, with_boundary=i > 0)`` (256 + 3, and
+ 2 for every stack but the first, which has no previous boundary map).

Choices that are ours, not AWing's:

- "x" varies along the width (columns) and "y" along the height (rows), as the landmark convention (x then
  y). AWing's ``xx_channel`` varies along dim 2 (rows), so its x and y channels are our y and x: the same
  information in a swapped channel order (a convolution learns either equally; AWing's weights are not loaded);
- a missing boundary map with ``with_boundary=True`` is an error, and so is a boundary map given to a conv
  without ``with_boundary``. AWing silently skips the gated channels when the map is None (its first stack is
  built with ``first_one=True``, i.e. without them): here the first stack is ``with_boundary=False``, and a
  wiring mistake fails loudly instead of feeding a conv fewer channels than it was built for;
- a boundary map at another resolution is resized bilinearly (after the clamp) to the input's; AWing only
  uses maps at the features' resolution;
- ``forward`` returns the convolution's output only (AWing's ``CoordConvTh`` also returns its last two input
  channels, which its models discard or only visualise);
- the coordinate channels are built on the fly on the input's device, in its dtype and memory format
  (``channels_last`` in, ``channels_last`` concatenation out). Building the 64x64 maps takes 0.04-0.13 ms on
  2 CPU cores, under 0.2 % of the 1x1 entrance conv (256 + 3 → 256, batch 16, 64x64: 58-235 ms); an lru-cached
  build measured the same within noise, so no per-(H, W, device, dtype) cache: it would be state for nothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BOUNDARY_GATE = 0.05  # AWing: a pixel is "on a boundary" where the clamped boundary map exceeds this


def coordinate_maps(height: int, width: int, with_r: bool = True, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The coordinate channels x, y (and r) of an (height, width) grid: (1, 2 or 3, height, width).

    x[i, j] = (2j - (W - 1)) / (W - 1) and y[i, j] = (2i - (H - 1)) / (H - 1), exact at -1, 0 and 1 (computed
    from integers, so the centre of an odd axis is exactly 0); r = sqrt(x² + y²) / max r. Computed in at least
    float32, then cast to ``dtype``.
    """
    work = torch.promote_types(dtype, torch.float32)

    def axis(n: int) -> torch.Tensor:  # (n,): pixel-centre index scaled to [-1, 1]
        return (2 * torch.arange(n, device=device, dtype=work) - (n - 1)) / max(n - 1, 1)

    y, x = torch.meshgrid(axis(height), axis(width), indexing="ij")  # (H, W) each
    maps = [x, y]
    if with_r:
        r = torch.sqrt(x * x + y * y)
        maps.append(r / r.max().clamp_min(torch.finfo(work).tiny))  # a 1x1 grid has r = 0 everywhere
    return torch.stack(maps)[None].to(dtype)


def boundary_gate(boundary: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[clamp(B, 0, 1) > 0.05] as a bool (N, 1, height, width), B (N, 1, h, w) resized bilinearly if (h, w)
    differs from (height, width)."""
    if boundary.dim() != 4 or boundary.shape[1] != 1:
        raise ValueError(f"boundary map must be (B, 1, H, W), got {tuple(boundary.shape)}")
    boundary = boundary.clamp(0.0, 1.0)
    if boundary.shape[-2:] != (height, width):
        boundary = F.interpolate(boundary, size=(height, width), mode="bilinear", align_corners=False)
    return boundary > BOUNDARY_GATE


def add_coordinates(x: torch.Tensor, with_r: bool = True, boundary: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, C, H, W) with the coordinate channels appended: (B, C + 2 (+1 with r) (+2 with a boundary), H, W).

    With ``boundary`` (B, 1, h, w), the gated copies x·gate and y·gate of :func:`boundary_gate` come last. The
    result has x's dtype, device and memory format (contiguous or channels_last).
    """
    batch, _, height, width = x.shape
    coords = coordinate_maps(height, width, with_r, x.device, x.dtype)  # (1, 2|3, H, W)
    extra = [coords.expand(batch, -1, -1, -1)]
    if boundary is not None:
        if boundary.shape[0] != batch:
            raise ValueError(f"boundary map batch {boundary.shape[0]} != input batch {batch}")
        gate = boundary_gate(boundary, height, width)  # (B, 1, H, W) bool
        extra.append(torch.where(gate, coords[:, :2], 0.0))  # (B, 2, H, W): x·gate, y·gate
    # torch.cat keeps channels_last only when every part has it: lay the (small) extra channels out as x is.
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.cat([x, torch.cat(extra, dim=1).contiguous(memory_format=layout)], dim=1)


class CoordConv2d(nn.Module):
    """AWing's CoordConv: :func:`add_coordinates` then ``nn.Conv2d(cin + extra, cout, ...)``, where ``extra`` =
    2 (x, y) + 1 (r, ``with_r``) + 2 (boundary-gated x, y, ``with_boundary``).

    ``forward(x, boundary=None)``: x (B, cin, H, W) → (B, cout, H', W') as the Conv2d; ``boundary`` (B, 1, h, w)
    is required with ``with_boundary`` and refused without it. Parameters: (cin + extra)·cout·k² (+ cout bias),
    all in ``self.conv``.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True,
                 with_r: bool = True, with_boundary: bool = False) -> None:
        super().__init__()
        self.with_r, self.with_boundary = with_r, with_boundary
        self.extra = 2 + int(with_r) + 2 * int(with_boundary)
        self.conv = nn.Conv2d(cin + self.extra, cout, kernel_size, stride, padding, bias=bias)

    def extra_repr(self) -> str:
        return f"with_r={self.with_r}, with_boundary={self.with_boundary}"

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        if self.with_boundary and boundary is None:
            raise ValueError("CoordConv2d(with_boundary=True) needs the previous stack's boundary map; build the "
                             "first stack's conv with with_boundary=False")
        if not self.with_boundary and boundary is not None:
            raise ValueError("CoordConv2d(with_boundary=False) was given a boundary map it has no channels for")
        return self.conv(add_coordinates(x, self.with_r, boundary))  # conv input (B, cin + extra, H, W)
