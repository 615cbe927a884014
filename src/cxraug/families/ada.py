"""Adaptive discriminator augmentation, ADA (Karras, Aittala, Hellsten, Laine, Lehtinen & Aila 2020,
"Training Generative Adversarial Networks with Limited Data"), written here from the paper.

Every image the discriminator sees, real or generated, in both players' updates (and in R1), passes through
a differentiable augmentation pipeline in which each transformation is applied to each image with
probability p. The paper's ``bgc`` pipeline, in its order, with its parameter distributions (images in
[-1, 1], geometric coordinates in units of the image size):

- b (pixel blitting): ``xflip`` (i ~ U{0,1}), ``rotate90`` (i ~ U{0..3}), ``xint`` integer translation
  (t ~ U(-0.125, 0.125) per axis, rounded to whole pixels);
- g (general geometric): ``scale`` isotropic (s ~ lognormal(0, (0.2 ln 2)^2)), ``rotate`` (theta ~ U(-pi, pi)),
  ``aniso`` anisotropic scaling (s, 1/s with s ~ lognormal(0, (0.2 ln 2)^2)), ``rotate`` again, ``xfrac``
  fractional translation (t ~ N(0, 0.125^2) per axis). The two rotations are each applied with
  probability 1 - sqrt(1 - p), so that some rotation happens with probability p;
- c (colour): ``brightness`` (x + b, b ~ N(0, 0.2^2)), ``contrast`` (x * c, c ~ lognormal(0, (0.5 ln 2)^2)),
  ``lumaflip``. On a grey image (r = g = b) the paper's luma flip (the colour matrix I - 2vv^T, v the luma
  axis) is the negative x -> -x, applied with i ~ U{0,1}; hue rotation and saturation leave a grey image
  unchanged and are therefore left out (they are identities on one channel).

All geometric transformations of a batch are composed into one 3x3 matrix per image, inverted and applied
with a single bilinear ``grid_sample`` (reflection padding at the borders, as the paper pads by
reflection); images that drew no geometric transformation are passed through untouched, so p = 0 is the
exact identity. The paper's wavelet-filtered resampling is replaced by plain bilinear sampling.

The controller: the sign of the discriminator's raw outputs on the real training images gives the
overfitting heuristic r_t = E[sign(D(x_real))]; every ``interval`` discriminator steps, p moves by
sign(r_t - target) * (batch * interval) / (speed_kimg * 1000), so it can go from 0 to 1 in ``speed_kimg``
thousand real images (the paper: target 0.6, interval 4, 500k images). p stays in [0, 1]. p and r_t are
device tensors (no host synchronisation per step) and part of :meth:`AdaptiveAugment.state`.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip")
GROUPS = {"b": ("xflip", "rotate90", "xint"), "g": ("scale", "rotate", "aniso", "xfrac"), "c": COLOR}


def parse_policy(policy: str) -> set[str]:
    """``"bgc"`` (the paper's default), any of its letters (``"bg"``), or a comma list of operation names."""
    policy = policy.strip()
    if not policy:
        return set()
    if "," not in policy and set(policy) <= set(GROUPS) and policy not in GEOMETRIC + COLOR:
        return {op for letter in policy for op in GROUPS[letter]}
    names = {p.strip() for p in policy.split(",") if p.strip()}
    unknown = names - set(GEOMETRIC) - set(COLOR)
    if unknown:
        raise ValueError(f"unknown ADA operations {sorted(unknown)}; choose from {GEOMETRIC + COLOR} or 'bgc'")
    return names


# ------------------------------------------------------------------ 3x3 homogeneous matrices, [B, 3, 3]
def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=tx.device, dtype=tx.dtype).repeat(tx.numel(), 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=sx.device, dtype=sx.dtype).repeat(sx.numel(), 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise by ``theta`` in (x right, y down) image coordinates as displayed: x' = cos x + sin y."""
    m = torch.eye(3, device=theta.device, dtype=theta.dtype).repeat(theta.numel(), 1, 1)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, s, -s, c
    return m


def apply_geometric(x: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Warp images by the forward transforms ``G`` [B, 3, 3] in normalised coordinates ([-1, 1] across the image,
    pixel centres at (2i + 1)/S - 1; x = column, y = row): output(p) = input(G^-1 p), bilinear, reflection
    padding. x [B, C, H, W] -> same."""
    G = G.float()
    a, b, c, d = G[:, 0, 0], G[:, 0, 1], G[:, 1, 0], G[:, 1, 1]
    det = a * d - b * c  # the affine part is never singular (scales are lognormal, rotations orthogonal)
    a_inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], 1) / det.view(-1, 1, 1)  # [B, 2, 2]
    inv = torch.cat([a_inv, -a_inv @ G[:, :2, 2:]], dim=2)  # [B, 2, 3]: output -> input, no host sync
    grid = F.affine_grid(inv, list(x.shape), align_corners=False)  # [B, H, W, 2]
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(x.dtype)


class AdaptiveAugment:
    """``ada(x, generator)`` augments a batch [B, C, H, W] with the current p; ``ada.accumulate(d_real)`` and
    ``ada.adjust(batch_size)`` drive p (see the module docstring). ``p`` may be fixed by ``target = 0``."""

    def __init__(self, policy: str = "bgc", p: float = 0.0, target: float = 0.6, interval: int = 4,
                 speed_kimg: float = 500.0, device: torch.device | str = "cpu"):  # fmt: skip
        self.ops = parse_policy(policy)
        self.target, self.interval, self.speed_kimg = float(target), max(int(interval), 1), float(speed_kimg)
        self.p = torch.tensor(float(p), device=device)  # current augmentation probability
        self.rt = torch.zeros((), device=device)  # r_t of the last completed interval
        self._sum = torch.zeros((), device=device)  # sum of sign(D(real)) in the running interval
        self._count = torch.zeros((), device=device)  # outputs in it
        self._steps = 0  # discriminator steps in the running interval

    def __bool__(self) -> bool:
        return bool(self.ops)

    # ------------------------------------------------------------------ controller
    @torch.no_grad()
    def accumulate(self, d_real: torch.Tensor) -> None:
        """Collect sign(D(x_real)) from one discriminator step."""
        d = d_real.detach().float()
        self._sum += torch.sign(d).sum()
        self._count += d.numel()

    @torch.no_grad()
    def adjust(self, batch_size: int) -> bool:
        """Called once per discriminator step; every ``interval`` steps updates r_t and p. Returns True then."""
        self._steps += 1
        if self._steps < self.interval:
            return False
        stats = torch.stack([self._sum, self._count])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)  # every process moves p by the same all-process r_t
        self.rt = stats[0] / stats[1].clamp(min=1)
        if self.target > 0:
            delta = torch.sign(self.rt - self.target) * (batch_size * self.interval / (self.speed_kimg * 1000))
            self.p = (self.p + delta).clamp(0.0, 1.0)
        self._sum.zero_()
        self._count.zero_()
        self._steps = 0
        return True

    def logs(self) -> dict[str, torch.Tensor]:
        return {"ada_p": self.p.detach().clone(), "ada_rt": self.rt.detach().clone()}

    def state(self) -> dict:
        return {"p": self.p.cpu(), "rt": self.rt.cpu(), "sum": self._sum.cpu(), "count": self._count.cpu(),
                "steps": self._steps}  # fmt: skip

    def load_state(self, st: dict) -> None:
        dev = self.p.device
        self.p, self.rt = st["p"].to(dev), st["rt"].to(dev)
        self._sum, self._count, self._steps = st["sum"].to(dev), st["count"].to(dev), int(st["steps"])

    # ------------------------------------------------------------------ the pipeline
    def _apply(self, b: int, device, generator, p: torch.Tensor | None = None) -> torch.Tensor:  # [B] bool
        """Which images get one transformation: U[0,1) < p."""
        p = self.p if p is None else p
        return torch.rand(b, device=device, generator=generator) < p.to(device)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw order on ``generator``: per operation in the pipeline order, the 'applied' uniforms then its
        parameters."""
        if not self.ops:
            return x
        b, dev = x.size(0), x.device
        f32 = dict(device=dev, dtype=torch.float32)
        one, zero = torch.ones(b, **f32), torch.zeros(b, **f32)
        G = torch.eye(3, **f32).repeat(b, 1, 1)  # forward transform, composed left to right: G = T_n ... T_1
        moved = torch.zeros(b, device=dev, dtype=torch.bool)  # any geometric op applied
        rnd = lambda *shape: torch.rand(*shape, generator=generator, **f32)  # noqa: E731
        nrm = lambda *shape: torch.randn(*shape, generator=generator, **f32)  # noqa: E731

        def gate(values: torch.Tensor, identity: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
            nonlocal moved
            on = self._apply(b, dev, generator, p)  # [B]
            moved = moved | on
            return torch.where(on.view(-1, *[1] * (values.dim() - 1)), values, identity)

        if "xflip" in self.ops:
            i = gate(torch.floor(rnd(b) * 2), zero)
            G = scale2d(1 - 2 * i, one) @ G
        if "rotate90" in self.ops:
            i = gate(torch.floor(rnd(b) * 4), zero)
            G = rotate2d(-math.pi / 2 * i) @ G
        if "xint" in self.ops:
            t = gate((rnd(b, 2) * 2 - 1) * 0.125, torch.zeros(b, 2, **f32))
            px = torch.round(t * torch.tensor([x.size(3), x.size(2)], **f32))  # whole pixels
            G = translate2d(2 * px[:, 0] / x.size(3), 2 * px[:, 1] / x.size(2)) @ G
        if "scale" in self.ops:
            s = gate(torch.exp2(nrm(b) * 0.2), one)
            G = scale2d(s, s) @ G
        p_rot = 1 - torch.sqrt((1 - self.p).clamp(min=0))
        if "rotate" in self.ops:
            theta = gate((rnd(b) * 2 - 1) * math.pi, zero, p_rot)
            G = rotate2d(-theta) @ G
        if "aniso" in self.ops:
            s = gate(torch.exp2(nrm(b) * 0.2), one)
            G = scale2d(s, 1 / s) @ G
        if "rotate" in self.ops:
            theta = gate((rnd(b) * 2 - 1) * math.pi, zero, p_rot)
            G = rotate2d(-theta) @ G
        if "xfrac" in self.ops:
            t = gate(nrm(b, 2) * 0.125, torch.zeros(b, 2, **f32))
            G = translate2d(2 * t[:, 0], 2 * t[:, 1]) @ G
        if self.ops & set(GEOMETRIC):
            x = torch.where(moved.view(-1, 1, 1, 1), apply_geometric(x, G), x)
        if "brightness" in self.ops:
            x = x + gate(nrm(b) * 0.2, zero).view(-1, 1, 1, 1).to(x.dtype)
        if "contrast" in self.ops:
            x = x * gate(torch.exp2(nrm(b) * 0.5), one).view(-1, 1, 1, 1).to(x.dtype)
        if "lumaflip" in self.ops:
            i = gate(torch.floor(rnd(b) * 2), zero)
            x = x * (1 - 2 * i).view(-1, 1, 1, 1).to(x.dtype)
        return x
