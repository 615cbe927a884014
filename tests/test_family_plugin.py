"""Adding a generator family needs no edit under src/ (issue 29): a toy family defined in this file registers its
sampler (``@register``) and its trainer (``@trains``), then trains in the engine, checkpoints, resumes and is
sampled by the path ``cxraug synthesize`` takes (``load_generator``), like a built-in family."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import gan_cfg
from cxraug.models.artifact import GENERATORS, GeneratorFamily, load_generator, register
from cxraug.train.family import TRAINING, TrainingFamily, trains

S = 16


class ToyG(nn.Module):
    """z [B,8] -> image [B,1,S,S] in [-1,1]: one linear layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, S * S)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(-1, 1, S, S)


class ToySampler(GeneratorFamily):
    name = "toy"

    @classmethod
    def build(cls, config, n_labels):
        return ToyG()

    @torch.no_grad()
    def sample(self, n, labels=None, source=None, generator=None):
        z = torch.randn(n, 8, generator=generator)
        return self.net(z.to(self.device)).cpu(), self._real_rows(n, generator)


class ToyTraining(TrainingFamily):
    """Non-saturating GAN (Goodfellow et al. 2014) with a linear critic."""

    graphable = True

    def __init__(self, cfg, n_labels, rng, pool_seed=0):
        from cxraug.train.seeding import seeded_init

        self.cfg, self.rng, self.spec = cfg, rng, ToySampler
        with seeded_init(cfg.seed):  # the seed's own init stream, as every family builds its networks
            self.G, self.D = ToyG(), nn.Sequential(nn.Flatten(), nn.Linear(S * S, 1))
        self.generators, self.critics = {"G": self.G}, {"D": self.D}

    def select_data(self, data):
        return data, None

    def _fake(self, n, device):
        return self.G(torch.randn(n, 8, device=device, generator=self.rng))

    def critic_loss(self, batch):
        x, _ = batch
        with torch.no_grad():
            fake = self._fake(len(x), x.device)
        real_logit, fake_logit = self.D(x), self.D(fake)
        loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        return loss, {"d_loss": loss.detach()}

    def generator_loss(self, batch):
        x, _ = batch
        loss = F.softplus(-self.critics["D"](self._fake(len(x), x.device))).mean()
        return loss, {"g_loss": loss.detach()}


@pytest.fixture
def toy_family():
    register(ToySampler)
    trains("toy")(ToyTraining)
    yield
    GENERATORS.pop("toy", None)
    TRAINING.pop("toy", None)


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    from cxraug.data.cache import build_cache
    from cxraug.data.phantom import phantom_collection
    from cxraug.data.preprocess import Preprocess

    coll = phantom_collection({"normal": 6, "covid": 6}, size=S, seed=3)
    return build_cache(coll, Preprocess(S), cache_root=tmp_path_factory.mktemp("toy"), progress=False)


def test_a_family_from_outside_src_trains_resumes_and_samples(toy_family, tiny_ds, tmp_path):
    from cxraug.train.engine import Trainer

    cfg = gan_cfg("dcgan-64", family="toy", data={"size": S}, batch_size=4, steps=4, ckpt_every=2, ema_decay=0.0)
    straight = Trainer(cfg, tiny_ds, tmp_path / "a", progress=False)
    ckpt = straight.fit()
    fam = load_generator(ckpt)
    assert isinstance(fam, ToySampler) and fam.size == S
    imgs, _ = fam.sample(3, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (3, 1, S, S) and imgs.abs().max() <= 1
    half = Trainer(cfg, tiny_ds, tmp_path / "b", progress=False)
    half.fit(steps=2)
    resumed = Trainer(cfg, tiny_ds, tmp_path / "b", progress=False)
    resumed.resume(tmp_path / "b" / "checkpoints" / "last.pt")
    resumed.fit()
    assert torch.equal(resumed.family.G.fc.weight, straight.family.G.fc.weight)  # an exact resume
    assert resumed.family.has_critic and not resumed.family.takes_source


def test_trains_refuses_a_class_without_the_interface():
    with pytest.raises(TypeError, match="not a TrainingFamily"):
        trains("nothing")(object)
    assert "nothing" not in TRAINING
