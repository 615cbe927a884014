"""Adding a generator family needs no edit under src/ (issue 29): a toy family defined in this file is one
``Family`` subclass registered once (``@register``), naming its ``Training``. It trains in the engine, checkpoints,
resumes exactly, and through the paths users take (``cxraug.train.train``, ``cxraug synthesize``) like a built-in
family."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import gan_cfg
from cxraug.families import FAMILIES, Family, Training, family_of, load_generator, register
from cxraug.seeding import seeded_init

S = 16


class ToyG(nn.Module):
    """z [B,8] -> image [B,1,S,S] in [-1,1]: one linear layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, S * S)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(-1, 1, S, S)


class ToyTraining(Training):
    """Non-saturating GAN (Goodfellow et al. 2014) with a linear critic."""

    graphable = True

    def __init__(self, cfg, n_labels, rng, pool_seed=0):
        self.cfg, self.rng, self.spec = cfg, rng, family_of(cfg.family)
        with seeded_init(cfg.seed):  # the seed's own init stream, as every family builds its networks
            self.G, self.D = self.spec.build({}, n_labels), self.spec.build_critics({}, n_labels)["D"]
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


class Toy(Family):
    name = "toy"
    paper = "Goodfellow et al. 2014, arXiv:1406.2661"
    training = ToyTraining

    @classmethod
    def build(cls, config, n_labels):
        return ToyG()

    @classmethod
    def build_critics(cls, config, n_labels):
        return {"D": nn.Sequential(nn.Flatten(), nn.Linear(S * S, 1))}

    @torch.no_grad()
    def sample(self, n, labels=None, source=None, generator=None):
        z = torch.randn(n, 8, generator=generator)
        return self.net(z.to(self.device)).cpu(), self._real_rows(n, generator)


@pytest.fixture
def toy_family():
    register(Toy)
    yield
    FAMILIES.pop("toy", None)


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
    assert isinstance(fam, Toy) and fam.size == S
    imgs, _ = fam.sample(3, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (3, 1, S, S) and imgs.abs().max() <= 1
    half = Trainer(cfg, tiny_ds, tmp_path / "b", progress=False)
    half.fit(steps=2)
    resumed = Trainer(cfg, tiny_ds, tmp_path / "b", progress=False)
    resumed.resume(tmp_path / "b" / "checkpoints" / "last.pt")
    resumed.fit()
    assert torch.equal(resumed.family.G.fc.weight, straight.family.G.fc.weight)  # an exact resume
    assert resumed.family.has_critic and not resumed.family.takes_source


def test_a_family_from_outside_src_through_train_and_synthesize(toy_family, tmp_path):
    """``cxraug.train.train`` (what ``cxraug train`` calls) and the ``synthesize`` command, unchanged."""
    from cxraug.cli import main
    from cxraug.train import train

    run = train("dcgan-64", data="phantom:normal=6,covid=6", out=tmp_path / "runs", progress=False, family="toy",
                **{"data.size": S, "steps": 2, "batch_size": 4, "ema_decay": 0.0})  # fmt: skip
    assert (run / "config.yaml").read_text().count("family: toy") == 1
    rc = main(["synthesize", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--n", "5", "--out",
               str(tmp_path / "synth"), "-q"])  # fmt: skip
    assert rc == 0 and len(list((tmp_path / "synth").rglob("*.png"))) == 5


def test_register_refuses_a_class_without_the_interface():
    with pytest.raises(TypeError, match="not a Family"):
        register(object)
    bad = type("Bad", (Toy,), {"name": "bad", "training": object})
    with pytest.raises(TypeError, match="not a Training subclass"):
        register(bad)
    assert "bad" not in FAMILIES


def test_a_family_whose_word_and_training_disagree_is_refused_when_built(toy_family):
    """``names`` (what the checkpoint records) and ``has_critic`` must be what its training builds."""
    from cxraug.families import make_training

    class Liar(Toy):
        name, names, main = "liar", ("G", "G2"), "G"

    register(Liar)
    try:
        with pytest.raises(TypeError, match=r"Liar: its training built generators \['G'\]"):
            make_training(gan_cfg("dcgan-64", family="liar"), 0)
    finally:
        FAMILIES.pop("liar", None)
    with pytest.raises(TypeError, match="main 'H' is not one of its networks"):
        register(type("Headless", (Toy,), {"name": "headless", "main": "H"}))
