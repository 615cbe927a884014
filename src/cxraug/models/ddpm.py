"""Denoising diffusion (DDPM, Ho et al. 2020) with DDIM sampling (Song et al. 2021), on Hugging Face diffusers.

The network is diffusers' ``UNet2DModel``: one grey channel in and out, block widths ``width x unet_mult``
(one level per entry, each level but the last halving the resolution), ``unet_layers`` residual blocks per
level, self-attention at the feature-map sizes in ``unet_attention`` (Ho et al.: at 16 x 16) and in the
middle block, dropout ``dropout``. It predicts the noise ``eps`` that was added to an image (Ho et al.'s
epsilon parameterisation).

Class conditioning (``class_cond``): cxraug's labels are *vectors* ``y`` [B,K] — one-hot for single-label
data, multi-hot for multi-label data (14 CheXpert findings, unknowns as 0). UNet2DModel's ``num_class_embeds``
takes one class index per image and cannot express a multi-hot vector, so the UNet is built with
``class_embed_type="identity"`` and fed ``W y``: a learned linear map from the label vector to the timestep
embedding's width, added to the timestep embedding. For a one-hot ``y`` this is exactly an embedding-table
lookup (column ``k`` of ``W``), so nothing is lost against ``num_class_embeds``; for multi-hot vectors it sums
the findings' embeddings (as the conditional GAN's generator does, :mod:`cxraug.models.cgan`).

Noise schedule: diffusers' ``DDPMScheduler`` with ``diffusion_steps`` (T = 1000) training steps and linear
betas 1e-4..0.02 (Ho et al.) or the cosine schedule (Nichol & Dhariwal 2021, ``squaredcos_cap_v2``).
Sampling: ``DDIMScheduler`` on the same betas, ``sample_steps`` steps spaced as in Song et al.'s code
(t = 0, T/S, 2T/S, ..., "leading"), eta = 0 (deterministic: every random number is the starting noise x_T),
the predicted x_0 clipped to [-1, 1] at each step (as Ho et al.'s sampler does). ``diffusers`` is imported
inside the functions, so ``import cxraug`` stays light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cxraug.errors import ConfigError
from cxraug.models.common import ConfigSection

SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # our name -> diffusers' beta_schedule


@dataclass(frozen=True)
class DDPMConfig(ConfigSection):
    """The diffusion family's own options (flat config keys) and their defaults (Ho et al. 2020; DDIM sampling,
    Song et al. 2021); a config without one of them (e.g. an older config dict) reads the default. The family
    also reads width (the UNet's base width) and data.size."""

    unet_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # UNet block widths = width x these
    unet_layers: int = 2  # residual blocks per UNet level
    unet_attention: list[int] = field(default_factory=lambda: [16])  # feature-map sizes with self-attention
    dropout: float = 0.1  # in the UNet's residual blocks (Ho et al.: 0.1 on CIFAR-10)
    class_cond: bool = False  # condition on the label vectors (W y added to the timestep embedding)
    noise_schedule: str = "linear"  # linear (Ho et al.) | cosine (Nichol & Dhariwal)
    diffusion_steps: int = 1000  # T, the forward process's steps
    sample_steps: int = 50  # DDIM steps when sampling (eta 0)
    sample_batch: int = 128  # images denoised at once when sampling
    preview_steps: int = 10  # DDIM steps for the training previews (sample grids): a fifth of sample_steps' cost


def _schedule_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    opts = DDPMConfig.from_config(config)
    kind = opts.noise_schedule
    if kind not in SCHEDULES:
        raise ConfigError(f"noise_schedule must be one of {', '.join(SCHEDULES)}, got {kind!r} (--set noise_schedule)")
    t = opts.diffusion_steps
    if t < 2:
        raise ConfigError(f"diffusion_steps must be an integer >= 2, got {t} (--set diffusion_steps)")
    # linear: Ho et al.'s beta_1 = 1e-4 ... beta_T = 0.02 (diffusers' defaults, stated here so they cannot drift)
    return {"num_train_timesteps": t, "beta_schedule": SCHEDULES[kind], "beta_start": 1e-4, "beta_end": 0.02,
            "prediction_type": "epsilon"}  # fmt: skip


def noise_scheduler(config: dict[str, Any]):
    """The forward process q(x_t | x_0) for training: diffusers' ``DDPMScheduler`` (``add_noise``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_schedule_kwargs(config), clip_sample=True)


def check_sampling(config: dict[str, Any]) -> dict[str, Any]:
    """The schedule's arguments, once ``sample_steps`` and ``preview_steps`` (1..T) and ``sample_batch`` (>= 1)
    are checked."""
    kw = _schedule_kwargs(config)
    opts = DDPMConfig.from_config(config)
    batch = opts.sample_batch
    for key in ("sample_steps", "preview_steps"):
        steps = getattr(opts, key)
        if not 1 <= steps <= kw["num_train_timesteps"]:
            raise ConfigError(f"{key} must be within 1..{kw['num_train_timesteps']} (the diffusion steps), "
                              f"got {steps} (--set {key})")  # fmt: skip
    if batch < 1:
        raise ConfigError(f"sample_batch must be an integer >= 1, got {batch} (--set sample_batch)")
    return kw


def ddim_scheduler(config: dict[str, Any], steps: int | None = None):
    """The deterministic DDIM sampler (eta = 0) on the same betas, its timesteps set to ``steps`` (default: the
    config's ``sample_steps``)."""
    from diffusers import DDIMScheduler

    kw = check_sampling(config)
    steps = int(steps or DDPMConfig.from_config(config).sample_steps)
    s = DDIMScheduler(**kw, clip_sample=True, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    s.set_timesteps(steps)
    return s


def unet_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """``UNet2DModel`` arguments for a config; a size or width the UNet cannot take is one :class:`ConfigError`."""
    size, width = int(config["data"]["size"]), int(config["width"])
    opts = DDPMConfig.from_config(config)
    mult, attn, layers, dropout = opts.unet_mult, set(opts.unet_attention), opts.unet_layers, opts.dropout
    if not mult or min(mult) < 1 or layers < 1 or width < 1 or not 0 <= dropout < 1:
        raise ConfigError(f"ddpm: unet_mult {mult} (integers >= 1), unet_layers {layers} (>= 1), width {width} "
                          f"(>= 1) and dropout {dropout} (within [0, 1)) must be valid")  # fmt: skip
    down = 2 ** (len(mult) - 1)
    if size % down:
        raise ConfigError(f"ddpm: a {len(mult)}-level UNet halves the image {len(mult) - 1} times, so the image size "
                          f"must be a multiple of {down}, got {size} px (--size or --set unet_mult)")  # fmt: skip
    channels = tuple(width * m for m in mult)
    levels = [size // 2**i for i in range(len(mult))]  # feature-map size of each level
    down_types = tuple("AttnDownBlock2D" if s in attn else "DownBlock2D" for s in levels)
    up_types = tuple("AttnUpBlock2D" if s in attn else "UpBlock2D" for s in reversed(levels))
    return dict(
        sample_size=size, in_channels=1, out_channels=1, layers_per_block=layers, block_out_channels=channels,
        down_block_types=down_types, up_block_types=up_types, dropout=dropout,
        norm_num_groups=math.gcd(32, *channels),  # GroupNorm(32) as Ho et al., fewer groups for narrow test nets
        attention_head_dim=8 if min(channels) % 8 == 0 else None,  # None: one head as wide as the block
    )  # fmt: skip


class DenoisingUNet(nn.Module):
    """eps_theta(x_t, t[, y]): diffusers' UNet2DModel, plus (conditional) the label projection ``W``.

    ``x_t`` [B,1,S,S], ``t`` [B] or a scalar (integer timesteps), ``y`` [B,K] label vectors -> eps [B,1,S,S].
    """

    def __init__(self, unet: dict[str, Any], n_labels: int = 0):
        super().__init__()
        from diffusers import UNet2DModel

        self.n_labels = n_labels
        self.unet = UNet2DModel(**unet, class_embed_type="identity" if n_labels else None)
        temb = unet["block_out_channels"][0] * 4  # UNet2DModel's timestep-embedding width
        self.label_proj = nn.Linear(n_labels, temb, bias=False) if n_labels else None  # W: [K] -> [temb]

    @classmethod
    def from_config(cls, config: dict[str, Any], n_labels: int) -> DenoisingUNet:
        conditional = DDPMConfig.from_config(config).class_cond and n_labels > 0
        return cls(unet_kwargs(config), n_labels if conditional else 0)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.label_proj is not None:
            y = torch.zeros(x.size(0), self.n_labels, device=x.device) if y is None else torch.nan_to_num(y.float())
            emb = self.label_proj(y.to(self.label_proj.weight.dtype))  # [B, temb]
        return self.unet(x, t, class_labels=emb).sample
