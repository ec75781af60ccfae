"""TAB, "Think about boundary": self-calibrated boundary estimation and boundary-aware landmark transform
(paper 004; IMPLEMENTATION_NOTES §0 and §5; official code Sierkinhane/TAB).

- **SCBE** (Sec. 3.1, Fig. 4): a stem (ImageNet VGG16-bn ``features[0:23]`` by default; Table 8's ResNet-50 and
  hourglass stems as options, ``components.stems``), then 2 stacked FAN hourglasses (HPM blocks, average pooling,
  §0.2) with intermediate supervision and feature reuse (next input = input + 1x1(features) + 1x1(maps)); each
  stack predicts M + 1 boundary heatmaps (the layout's M lines and their union: 16 for WFLW's 98 points). The
  last hourglass's four level sums (8², 16², 32², 64²) are the multi-scale boundary-aware features.
- **BALT** (Sec. 3.2, eqs. 3-5): a UNet (width 48) from the last stack's boundary maps to K landmark heatmaps, the
  SCBE features fused into its encoder (``components.balt``: 0x-3x fusion, single- or multi-scale features).
- **Training** (Sec. 4.2 and the code): stage ``scbe`` trains the SCBE with the mean squared error of every stack's
  boundary maps (summed over stacks); stage ``balt`` freezes the SCBE (no gradients, BatchNorm statistics fixed)
  and trains the BALT with the landmark heatmaps' mean squared error, starting from a stage-1 checkpoint
  (``init_from``, ``init_modules: [scbe]``). Decoding: argmax + 1/4 pixel (§0.6).

Departures and choices (IMPLEMENTATION_NOTES §5, §7.5):

- Two stages vs end to end: the paper calls its training "end-to-end" but its code (and Sec. 4.2's text) trains in
  two stages; the two stages are the default and the manifest's. ``stage="end_to_end"`` trains both modules at once
  on the sum of both losses (the paper's Sec. 3 wording), as a config (``experiments/tab/end_to_end.yaml``).
- BALT fusion: the code's strided 3x3 convolutions ("2x", BALT_MS_2X), not eq. 4's max-pooled transitions
  (``transition="max_pool"`` builds those).
- Sigma: the code configures a boundary sigma of 1.0 but its datasets read SIGMA, so the effective boundary sigma
  is 1.5, as the landmark sigma; both are 1.5 here. Landmark targets: unnormalised Gaussians (peak 1) cut at 3
  sigma (HRNet); boundary maps are not cut (the code's distance transform), and use the exact distance to the
  polylines instead of the code's rasterised 1-px lines (``HeatmapCodec.boundary_maps``).
- Boundaries for 68 points: the layout's 13 lines + union (14 maps); the public code builds boundaries only for
  WFLW. Datasets trained with the WFLW SCBE (AFLW, COFW, 300W-LP) predict WFLW's 16 maps: ``boundary_layout``.
- Initialisation: the paper's N(0, 0.001) for every convolution of the hourglasses and heads (biases zero; BN
  weight 1, bias 0); the stem keeps its ImageNet weights, or torchvision's initialisation of those layers.
  ImageNet weights come from a local torchvision file (``stem_weights``); without one the stem trains from
  scratch, and every evaluation record says which (``diagnostics.scbe_stem_imagenet``). The BALT keeps PyTorch's
  default initialisation (the code initialises only the hourglasses).
- "ss" features (Table 9): the last stack's head features (64², the output of the last convolutions before the
  boundary maps); "ms": the last hourglass's four level sums.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from landmarks.heatmaps import HeatmapCodec
from landmarks.layouts import get_layout
from landmarks.losses import weighted_heatmap_mse
from lightning_modules.components.balt import BALT
from lightning_modules.components.hourglass import StackedHourglass, avg_pool
from lightning_modules.components.hpm import HPMBlock, fan_head
from lightning_modules.components.stems import load_stem_weights, stem_factory
from lightning_modules.heatmap import HeatmapModule

Stage = Literal["scbe", "balt", "end_to_end"]
STAGES = ("scbe", "balt", "end_to_end")
NO_LANDMARKS = ("a stage-1 TAB (stage 'scbe') predicts boundaries only: test the stage-2 model (stage 'balt', "
                "init_from the stage-1 checkpoint)")


class SCBEOutput(NamedTuple):
    """The boundary estimator's outputs: every stack's (B, M + 1, h, w) boundary maps, the last hourglass's level
    sums fine to coarse [(B, C, h, w), (B, C, h/2, w/2), ...] and the last stack's head features (B, C, h, w)."""

    boundaries: list[torch.Tensor]
    levels: list[torch.Tensor]
    features: torch.Tensor


class TABOutput(NamedTuple):
    """TAB's outputs: the SCBE's (every stack's boundary maps, ...) and the (B, K, h, w) landmark heatmaps (None in
    stage ``scbe``, where no BALT is built)."""

    scbe: SCBEOutput
    landmarks: torch.Tensor | None


class SCBE(nn.Module):
    """Self-calibrated boundary estimation: stem + ``num_stacks`` FAN hourglasses predicting ``num_maps`` boundary
    maps per stack. ``stem``: "vgg" (VGG16-bn, the paper's), "resnet" (ResNet-50 conv1 + layer1) or "hourglass"
    (FAN's, Table 8's baseline)."""

    def __init__(self, num_maps: int, num_stacks: int = 2, depth: int = 4, channels: int = 256, stem: str = "vgg",
                 init_std: float | None = 0.001, stem_width: int = 64) -> None:
        super().__init__()
        self.net = StackedHourglass(num_maps, num_stacks, depth, channels, HPMBlock, avg_pool,
                                    stem=stem_factory(stem, stem_width), head=fan_head)
        # 1 once ImageNet weights were loaded into the stem: saved with the SCBE, so a stage-2 record knows.
        self.register_buffer("stem_pretrained", torch.zeros(()))
        if init_std is not None:
            for name, module in self.net.named_modules():
                if name.startswith("stem"):
                    continue
                if isinstance(module, nn.Conv2d):
                    nn.init.normal_(module.weight, 0.0, init_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> SCBEOutput:
        net = self.net
        net.check_input(images)
        x = net.stem(images)  # (B, C, S/4, S/4)
        boundaries: list[torch.Tensor] = []
        for i in range(len(net.hourglasses)):
            levels = net.hourglasses[i].levels(x)  # coarse to fine, the last is the hourglass output
            features = net.heads[i](levels[-1])
            maps = net.to_maps[i](features)
            boundaries.append(maps)
            if i < len(net.merge_features):
                x = net.merge(i, x, features, maps)
        return SCBEOutput(boundaries, levels[::-1], features)


class BoundaryMSE(Metric):
    """Mean squared error of the predicted boundary maps over all faces and per subset (Table 8's "MSE"); exact
    under DDP (sums and counts)."""

    full_state_update = False

    def __init__(self, num_subsets: int) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(num_subsets + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_subsets + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, per_face: torch.Tensor, mask: torch.Tensor) -> None:
        """``per_face``: (B,) mean squared error of each face's maps; ``mask``: (B, S) subset membership."""
        member = torch.cat([torch.ones_like(mask[:, :1]), mask], 1).to(torch.float64)  # column 0: every face
        self.total += member.T @ per_face.to(torch.float64)
        self.count += member.sum(0)

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class TABModule(HeatmapModule):
    """TAB (module docstring). Defaults: the full 2-stack TAB of the paper, stage 2 (BALT on a frozen SCBE).

    Args:
        stage: "scbe" (stage 1: boundary estimator only, boundary loss; validation selects on
            ``val/boundary_mse``), "balt" (stage 2: SCBE frozen, landmark loss; needs ``init_from``) or
            "end_to_end" (both modules, both losses).
        num_stacks, depth, channels: SCBE hourglasses (2), levels (4), feature channels (256).
        stem: SCBE stem, "vgg", "resnet" or "hourglass" (Table 8).
        stem_width: channels of the VGG / ResNet stem's first convolutions (64, torchvision's; smaller only for
            CPU stand-ins, which then have no ImageNet weights).
        stem_weights: a local torchvision ImageNet state_dict for the stem (vgg16_bn / resnet50), loaded when a
            stage-1 (or end-to-end) fit starts; None: the stem trains from scratch.
        init_std: std of the hourglasses' initial convolution weights (0.001; None: PyTorch's default).
        boundary_layout: the layout whose boundaries the SCBE predicts (None: this model's layout); a stage 2 on
            AFLW, COFW or 300W-LP reuses the WFLW SCBE: "wflw_98".
        boundary_sigma: sigma of the boundary targets, heatmap pixels (1.5, the code's effective value).
        foreground_weight: AWing's weight map on both mean squared errors (0, the paper's plain MSE; CPU stand-ins
            use 10, as the hourglass stand-in does, so that 12 epochs leave the all-zero maps).
        width, fusion, features, transition: the BALT's (48; 2x; "ms" or "ss"; "strided_conv" or "max_pool").
        codec: stride 4 (64x64 maps), landmark sigma 1.5 cut at 3 sigma, argmax + 1/4 decoding.
        **kwargs: LandmarkModule arguments (layout, input_size, optimizer, lr_scheduler, init_from, ...).
    """

    evaluation_hparams = (*HeatmapModule.evaluation_hparams, "stem_weights")

    def __init__(
        self,
        stage: Stage = "balt",
        num_stacks: int = 2,
        depth: int = 4,
        channels: int = 256,
        stem: str = "vgg",
        stem_width: int = 64,
        stem_weights: str | None = None,
        init_std: float | None = 0.001,
        boundary_layout: str | None = None,
        boundary_sigma: float = 1.5,
        foreground_weight: float = 0.0,
        width: int = 48,
        fusion: int = 2,
        features: Literal["ms", "ss"] = "ms",
        transition: Literal["strided_conv", "max_pool"] = "strided_conv",
        codec: HeatmapCodec = HeatmapCodec(stride=4, sigma=1.5, truncate=3.0, decoder="argmax_quarter"),  # noqa: B008
        **kwargs,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        super().__init__(codec=codec, **kwargs)
        self.boundary_layout = get_layout(boundary_layout) if boundary_layout else self.layout
        self.own_boundaries = self.boundary_layout == self.layout  # targets can be drawn from the batch's points
        if not self.boundary_layout.boundaries:
            raise ValueError(f"layout {self.boundary_layout.name} defines no boundaries: give boundary_layout "
                             "(e.g. wflw_98, the SCBE TAB reuses for AFLW and COFW)")
        if stage != "balt" and not self.own_boundaries:
            raise ValueError(f"stage {stage!r} trains the SCBE on boundary targets drawn from the data's "
                             f"{self.layout.name} points: boundary_layout {self.boundary_layout.name} needs stage "
                             "'balt' (a frozen SCBE from init_from)")
        if stage == "balt" and stem_weights:
            raise ValueError("stem_weights start a stage-1 (or end-to-end) training; stage 'balt' takes its SCBE, "
                             "stem included, from init_from")
        self.stage, self.stem_weights, self.boundary_sigma = stage, stem_weights, boundary_sigma
        self.foreground_weight = foreground_weight
        num_maps = len(self.boundary_layout.boundaries) + 1  # lines + union
        self.scbe = SCBE(num_maps, num_stacks, depth, channels, stem, init_std, stem_width)
        self.balt = None if stage == "scbe" else BALT(num_maps, self.layout.num_points, channels, width, fusion,
                                                      features, transition)
        self.features = features
        if stage == "balt" and "scbe" not in self.frozen_names:
            self.frozen_names.append("scbe")
        self.boundary_stats = nn.ModuleDict()  # stage -> BoundaryMSE, built when the subsets are known

    # --- network ------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> TABOutput:
        self.check_input(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage != "balt"):  # frozen: no graph
            scbe = self.scbe(images)
        if self.balt is None:
            return TABOutput(scbe, None)
        features = scbe.levels if self.features == "ms" else [scbe.features]
        return TABOutput(scbe, self.balt(scbe.boundaries[-1], features))

    def landmark_maps(self, outputs: TABOutput) -> list[torch.Tensor]:
        if outputs.landmarks is None:
            raise RuntimeError(NO_LANDMARKS)
        return [outputs.landmarks]

    def boundary_targets(self, batch: dict, like: torch.Tensor) -> torch.Tensor:
        """(B, M + 1, h, w) boundary targets (lines and union) of the batch's points, shaped like ``like``."""
        return self.codec.boundary_maps(batch["landmarks"].to(like.dtype), self.layout.boundaries, like.shape[-2:],
                                        self.boundary_sigma, union=True, truncate=None)

    def training_loss(self, outputs: TABOutput, batch: dict) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.stage != "balt":  # stage 1 and end to end: every stack's boundary maps (intermediate supervision)
            maps = [b.float() for b in outputs.scbe.boundaries]
            target = self.boundary_targets(batch, maps[0])
            terms["boundary"] = sum(weighted_heatmap_mse(m, target, self.foreground_weight) for m in maps)
        if outputs.landmarks is not None:
            landmarks = outputs.landmarks.float()
            terms["landmark"] = weighted_heatmap_mse(landmarks, self.target_maps(batch, landmarks),
                                                     self.foreground_weight)
        terms["loss"] = sum(terms.values())
        return terms

    # --- set-up -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        if self.stage == "balt" and not self.init_from:
            raise ValueError("stage 'balt' trains the landmark transform on a frozen, trained SCBE: give init_from "
                             "(the stage-1 checkpoint) with init_modules [scbe]")
        if self.stem_weights and not self.init_from and not bool(self.scbe.stem_pretrained):
            load_stem_weights(self.scbe.net.stem, self.stem_weights)
            self.scbe.stem_pretrained.fill_(1.0)
        elif self.stem_weights and self.init_from:
            raise ValueError("give stem_weights (ImageNet, for a fresh start) or init_from (a TAB checkpoint), not "
                             "both: the checkpoint's stem would overwrite the ImageNet one")

    # --- evaluation ---------------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self.stage != "scbe":
            return super().validation_step(batch, batch_idx)
        maps = self(self.prepare_images(batch["image"])).scbe.boundaries[-1].float()
        self.log("val/boundary_mse", F.mse_loss(maps, self.boundary_targets(batch, maps)), prog_bar=True,
                 batch_size=len(maps), sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        if self.stage == "scbe":
            raise RuntimeError(NO_LANDMARKS)
        super().test_step(batch, batch_idx)

    def update_diagnostics(self, outputs: TABOutput, batch: dict, stage: str) -> None:
        super().update_diagnostics(outputs, batch, stage)
        if not self.own_boundaries:
            return
        maps = outputs.scbe.boundaries[-1].float()
        per_face = (maps - self.boundary_targets(batch, maps)).pow(2).mean((1, 2, 3))
        if stage not in self.boundary_stats:
            self.boundary_stats[stage] = BoundaryMSE(len(self.subsets)).to(self.device)
        self.boundary_stats[stage].update(per_face, self.subset_mask(batch))

    def compute_diagnostics(self, stage: str) -> dict[str, float]:
        out = super().compute_diagnostics(stage)
        if stage == "test":  # what the record states about the stem's start (ImageNet or scratch)
            out["scbe_stem_imagenet"] = float(self.scbe.stem_pretrained)
        stats = self.boundary_stats[stage] if stage in self.boundary_stats else None
        if stats is not None and stats.update_count:
            mse = stats.compute()
            out["boundary_mse"] = float(mse[0])
            out |= {f"boundary_mse/{name}": float(value) for name, value in zip(self.subsets, mse[1:], strict=True)}
            stats.reset()
        return out
