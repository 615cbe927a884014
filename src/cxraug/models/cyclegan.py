"""CycleGAN (Zhu et al. 2017) for unpaired translation, as in Zunair & Hamza (Normal -> COVID).

ResNet generator: c7s1-64, d128, d256, R256 x n_blocks (6 for <=128 px, 9 for 256), u128, u64,
c7s1-1, with InstanceNorm and reflection padding. Discriminator: the 70x70 PatchGAN
C64-C128-C256-C512 (4x4 convs, strides 2,2,2,1; no norm on C64) and a 1-channel patch map.

Synthesis (:class:`cxraug.families.cyclegan.CycleGAN`) translates given domain-A images, each exactly once, as Zunair
& Hamza translate every majority-class (normal) training image to the minority class.
"""

from __future__ import annotations

import torch
from torch import nn


class ResnetBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, channels: int = 1, width: int = 64, n_blocks: int = 6):
        super().__init__()
        w = width
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, w, 7),
            nn.InstanceNorm2d(w),
            nn.ReLU(True),  # c7s1-64
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.InstanceNorm2d(2 * w),
            nn.ReLU(True),  # d128: H -> H/2
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1),
            nn.InstanceNorm2d(4 * w),
            nn.ReLU(True),  # d256: -> H/4
        ]
        layers += [ResnetBlock(4 * w) for _ in range(n_blocks)]  # R256
        layers += [
            nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(2 * w),
            nn.ReLU(True),  # u128
            nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(w),
            nn.ReLU(True),  # u64
            nn.ReflectionPad2d(3),
            nn.Conv2d(w, channels, 7),
            nn.Tanh(),  # c7s1-1
        ]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: each output unit sees a 70x70 receptive field. [B,1,H,W] -> [B,1,H/8-2,W/8-2]."""

    def __init__(self, channels: int = 1, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.InstanceNorm2d(2 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1),
            nn.InstanceNorm2d(4 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1),
            nn.InstanceNorm2d(8 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(8 * w, 1, 4, 1, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImagePool:
    """History of generated images (Shrivastava et al.): once full, each new fake is returned with p=0.5,
    else swapped for a stored older one. Draws come from its own ``torch.Generator``; :meth:`state`
    holds the images and that generator, so a resumed run continues exactly."""

    def __init__(self, size: int = 50, seed: int = 0):
        self.size, self.images = size, []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:  # [B,C,H,W] -> [B,C,H,W]
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif torch.rand((), generator=self.rng).item() < 0.5:
                i = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state(self) -> dict:
        return {"images": torch.cat(self.images).cpu() if self.images else torch.zeros(0), "rng": self.rng.get_state()}

    def load(self, st: dict, device: torch.device | str = "cpu") -> None:
        imgs = st["images"].to(device)
        self.images = [imgs[i : i + 1] for i in range(len(imgs))]
        if isinstance(st.get("rng"), torch.Tensor):  # (older checkpoints kept a Python RNG: its draws are lost)
            self.rng.set_state(st["rng"])
