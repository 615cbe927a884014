"""The generator artifact (issue 12 item 2): a typed checkpoint the models layer owns, sampled per family."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import gan_cfg
from cxraug.data.preprocess import tensor_to_u8, u8_to_tensor
from cxraug.data.stats import fingerprints
from cxraug.errors import CXRAugError
from cxraug.families import FORMAT, GeneratorArtifact, load_generator
from cxraug.models.cyclegan import ResnetGenerator
from cxraug.train.engine import Trainer


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    from cxraug.data.cache import build_cache
    from cxraug.data.phantom import phantom_collection
    from cxraug.data.preprocess import Preprocess

    coll = phantom_collection({"normal": 6, "covid": 6}, size=32, seed=5)
    return build_cache(coll, Preprocess(32), cache_root=tmp_path_factory.mktemp("tiny"), progress=False)


TINY = {"data": {"size": 32}, "width": 8, "batch_size": 2, "n_blocks": 1, "steps": 2, "sample_every": 100}


@pytest.fixture(scope="module")
def cyclegan_ckpt(tiny_ds, tmp_path_factory):
    run = tmp_path_factory.mktemp("cyc")
    cfg = gan_cfg("cyclegan-64", **TINY, domain_a="normal", domain_b="covid")
    return Trainer(cfg, tiny_ds, run, progress=False).fit()


def test_checkpoint_is_a_typed_artifact(tiny_ds, cyclegan_ckpt, tmp_path):
    art = GeneratorArtifact.load(cyclegan_ckpt)
    assert (art.format, art.family, art.step) == (FORMAT, "cyclegan", 2)
    assert set(art.weights) == {"G_AB", "G_BA"} and set(art.ema) == {"G_AB"}
    assert sorted(art.class_names) == ["covid", "normal"] and art.config["domain_b"] == "covid"
    # the fingerprints of exactly its training images (both domains), computed independently
    both = np.concatenate([np.asarray(tiny_ds.only_class(c).images) for c in ("normal", "covid")])
    assert np.array_equal(art.fingerprints, fingerprints(both))
    # a standalone artifact: written atomically, read back with weights_only=True, same tensors
    art.save(tmp_path / "g.pt")
    assert torch.load(tmp_path / "g.pt", weights_only=True)["format"] == FORMAT
    again = GeneratorArtifact.load(tmp_path / "g.pt")
    assert all(torch.equal(v, again.ema["G_AB"][k]) for k, v in art.ema["G_AB"].items())
    assert not list(tmp_path.glob("*.tmp*"))


def test_cyclegan_translates_each_source_image_once(tiny_ds, cyclegan_ckpt):
    from cxraug.synth.generate import generate

    src = np.asarray(tiny_ds.only_class("normal").images)  # 6 domain-A images
    imgs, labs, info = generate(cyclegan_ckpt, None, seed=3, source=src)
    assert imgs.shape == src.shape and info["takes_source"] and info["trained_on_class"] == "covid"
    assert (labs[:, info["class_names"].index("covid")] == 1).all()
    # independent reference: the EMA G_AB, rebuilt by hand, on every source image
    art = GeneratorArtifact.load(cyclegan_ckpt)
    net = ResnetGenerator(1, 8, 1)
    net.load_state_dict(art.ema["G_AB"])
    with torch.no_grad():
        ref = tensor_to_u8(net.eval()(u8_to_tensor(src))).astype(int)
    match = [int(np.argmin(np.abs(ref - im.astype(int)).reshape(len(ref), -1).max(1))) for im in imgs]
    assert sorted(match) == list(range(len(src)))  # a permutation: every image once, none twice
    assert all(np.abs(ref[j] - im.astype(int)).max() <= 1 for j, im in zip(match, imgs))
    three, _, _ = generate(cyclegan_ckpt, 3, seed=3, source=src)
    assert len(three) == 3 and len({im.tobytes() for im in three}) == 3
    with pytest.raises(CXRAugError, match="--source"):
        generate(cyclegan_ckpt, 4)


def test_cli_cyclegan_without_source_is_one_line_and_with_source_translates(cyclegan_ckpt, tmp_path, capsys):
    from cxraug.cli import main

    assert main(["synthesize", "--checkpoint", str(cyclegan_ckpt), "--n", "4", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--source" in err and "Traceback" not in err
    rc = main(["synthesize", "--checkpoint", str(cyclegan_ckpt), "--source", "phantom:normal=5", "--out",
               str(tmp_path / "b")])  # fmt: skip
    assert rc == 0 and len(list((tmp_path / "b").rglob("*.png"))) == 5

    from cxraug.cli.evaluate import _fake_images

    fake, desc = _fake_images(str(cyclegan_ckpt), 100, 32, 0, False, "phantom:normal=7")
    assert fake.shape == (7, 32, 32) and "cyclegan" in desc


def test_legacy_checkpoint_still_loads(tiny_ds, tmp_path):
    """`cxraug-gan/1` checkpoints (flat trainer dicts with nets + AveragedModel EMA) load and sample the same."""
    tr = Trainer(gan_cfg("cgan-64", **TINY), tiny_ds, tmp_path / "run", progress=False)
    tr.fit()
    st = tr.state_dict()
    old = {"format": "cxraug-gan/1", "config": st["config"], "step": st["step"], "class_names": st["class_names"],
           "real_labels": st["real_labels"], "train_phash": st["train_phash"],
           "nets": {**st["weights"], **st["critics"]}, "ema": tr.ema.state_dict()}  # fmt: skip
    torch.save(old, tmp_path / "old.pt")
    a, b = load_generator(tmp_path / "old.pt"), load_generator(tr.run_dir / "checkpoints" / "last.pt")
    y = torch.eye(2)[[0, 1, 1]]
    ia, _ = a.sample(3, labels=y, generator=torch.Generator().manual_seed(1))
    ib, _ = b.sample(3, labels=y, generator=torch.Generator().manual_seed(1))
    assert a.conditional and torch.equal(ia, ib)
    with pytest.raises(CXRAugError, match="not a cxraug GAN checkpoint"):
        torch.save({"format": "something"}, tmp_path / "x.pt")
        load_generator(tmp_path / "x.pt")


@pytest.mark.parametrize("damage", ["generator", "sampler"])
def test_a_damaged_legacy_checkpoint_is_one_line_naming_it(tiny_ds, tmp_path, damage):
    """A ``cxraug-gan/1`` file missing its generator or its sampler stream: one CheckpointError naming the file on
    resume, and on loading for sampling unless sampling does not need the missing part (the raw KeyError of the
    first families commit, 6c850db, is what this guards against)."""
    from cxraug.errors import CheckpointError

    tr = Trainer(gan_cfg("cgan-64", **TINY), tiny_ds, tmp_path / "run", progress=False)
    tr.fit()
    st = tr.state_dict()
    nets = {**st["weights"], **st["critics"]}
    rng = {"sampler": st["per_rank"][0]["sampler"]}
    if damage == "generator":
        nets.pop("G")
    else:
        rng.pop("sampler")
    old = {"format": "cxraug-gan/1", "config": st["config"], "step": st["step"], "class_names": st["class_names"],
           "real_labels": st["real_labels"], "train_phash": st["train_phash"], "nets": nets, "rng": rng,
           "opt_g": st["opt_g"], "opt_d": st["opt_d"], "history": st["history"]}  # fmt: skip
    torch.save(old, tmp_path / "old.pt")
    again = Trainer(gan_cfg("cgan-64", **TINY), tiny_ds, tmp_path / "run2", progress=False)
    with pytest.raises(CheckpointError, match="old.pt") as e:
        again.resume(tmp_path / "old.pt")
    assert "\n" not in str(e.value)
    if damage == "generator":
        with pytest.raises(CheckpointError, match=r"old.pt is not a usable cxraug GAN checkpoint \(cxraug-gan/1: no 'G'\)"):
            load_generator(tmp_path / "old.pt")
    else:  # sampling needs no training stream
        assert load_generator(tmp_path / "old.pt").conditional


def test_sampling_side_never_imports_the_trainer():
    code = ("import sys, cxraug.synth.generate, cxraug.cli.synth, cxraug.metrics.hooks, cxraug.cli.evaluate, "
            "cxraug.classify.assemble; print(sorted(m for m in sys.modules if m.startswith('cxraug.train')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_study_translates_its_majority_training_images():
    """The study hands a translating generator the largest non-minority class of its training split."""
    from types import SimpleNamespace

    from cxraug.classify.generators import StudyGenerators

    y = np.array([0, 1, 1, 2, 2, 2, 1, 2, 0])  # classes: 0 = covid (minority), 1 = pneumonia, 2 = normal
    images = np.arange(len(y))[:, None, None] * np.ones((1, 2, 2), np.uint8)
    train = np.array([0, 1, 2, 3, 4, 6, 7])  # normal: 3, 4, 7; pneumonia: 1, 2, 6; covid: 0
    study = SimpleNamespace(split={"train": train}, multilabel=False, y=y, names=["covid", "pneumonia", "normal"],
                            k_min=0, ds=SimpleNamespace(images=images))  # fmt: skip
    y[6] = 2  # now normal (3, 4, 6, 7) outnumbers pneumonia (1, 2)
    got = StudyGenerators._majority_train_images(study)
    assert np.array_equal(got[:, 0, 0], [3, 4, 6, 7])


def test_fid_hook_translates_source_images_for_cyclegan(tiny_ds, tmp_path):
    """Regression: the FID hook fed noise to every generator (a CycleGAN crashed) and compared with domain A.
    Reference: FID of the EMA G_AB's translations of the domain-A images against the domain-B images."""
    from cxraug.metrics.encoder import save_encoder, train_encoder
    from cxraug.metrics.features import extract, get_extractor
    from cxraug.metrics.fid import fid_from_features
    from cxraug.metrics.hooks import EncoderFIDHook

    enc = save_encoder(train_encoder(tiny_ds.images[:], steps=2, batch_size=4, width=8, progress=False),
                       tmp_path / "e.safetensors")  # fmt: skip
    hook = EncoderFIDHook(f"encoder:{enc}")
    cfg = gan_cfg("cyclegan-64", **TINY, domain_a="normal", domain_b="covid", fid_every=2, fid_n=4)
    tr = Trainer(cfg, tiny_ds, tmp_path / "run", progress=False, eval_hook=hook)
    tr.fit()
    ((_, fid),) = tr.history["fid"]
    a, b = np.asarray(tiny_ds.only_class("normal").images), np.asarray(tiny_ds.only_class("covid").images)
    with torch.no_grad():
        fake = tensor_to_u8(tr.ema.module.eval()(u8_to_tensor(a[:4])))
    ext = get_extractor(f"encoder:{enc}")
    assert fid == pytest.approx(fid_from_features(extract(ext, b, progress=False), extract(ext, fake, progress=False)),
                                rel=1e-4)  # fmt: skip


def test_balance_reports_the_images_a_translating_generator_wrote(cyclegan_ckpt, tmp_path):
    """Regression: with fewer --source images than the plan asks for, balance.json said the planned number
    was added although each source image is translated once; "added"/"after" now count what was written."""
    import csv
    import json

    from cxraug.cli import main

    out = tmp_path / "runs"
    # covid 2 vs normal 8: equalize plans 6 covid images; the source holds only 3 normal images
    rc = main(["balance", "--data", "phantom:normal=8,covid=2", "--generator", str(cyclegan_ckpt), "--source",
               "phantom:normal=3", "--strategy", "equalize", "--out", str(out), "-q"])  # fmt: skip
    assert rc == 0
    (run,) = out.glob("balance-*")
    bal = json.loads((run / "balance.json").read_text())
    with open(run / "manifest.csv", newline="") as f:
        written = sum(r["synthetic"] == "true" and r["label"] == "covid" for r in csv.DictReader(f))
    assert bal["planned"] == {"covid": 6} and written == 3
    assert bal["added"] == {"covid": written} and bal["after"] == {"covid": 2 + written, "normal": 8}


@pytest.mark.parametrize("family", ["dcgan", "wgangp", "cgan", "stylegan2", "ddpm"])
@pytest.mark.parametrize("class_cond", [False, True])
def test_conditional_for_a_config_is_what_the_built_sampler_does(family, class_cond):
    """A family's answer before training (``conditional_for(config)``, which a study's checks use) agrees with
    the sampler built from that config (its ``conditional``, what synthesis honours)."""
    from cxraug.config import to_dict
    from cxraug.families import family_of

    cfg = to_dict(gan_cfg({"dcgan": "dcgan-64", "wgangp": "wgan-gp-64", "cgan": "cgan-64",
                           "stylegan2": "stylegan2-ada-64", "ddpm": "ddpm-64"}[family],
                          width=8, z_dim=16, w_dim=16, unet_mult=[1, 1], unet_attention=[], class_cond=class_cond))  # fmt: skip
    fam = family_of(cfg["family"])
    sampler = fam(fam.build(cfg, 2), cfg, ["covid", "pneumonia"], torch.zeros(1, 2))
    assert fam.conditional_for(cfg) == sampler.conditional


def test_an_unconditional_generator_of_several_classes_makes_unlabelled_images_and_refuses_a_label(tmp_path, capsys):
    """Trained on normal and covid images at once, a DCGAN has no say in its images' class: synthesize filed
    them under the classes of random training rows and ignored --label; `balance` already refused it. With
    --class (or trained on one class's images only, as a study does) its images carry that class."""
    import csv

    from cxraug.cli import main
    from cxraug.train import train

    both = train("dcgan-64", "phantom:normal=6,covid=6", tmp_path / "g1", progress=False, steps=1, width=8,
                 batch_size=4, sample_every=100, **{"data.size": 32})  # fmt: skip
    one = train("dcgan-64", "phantom:normal=6,covid=6", tmp_path / "g2", progress=False, steps=1, width=8,
                batch_size=4, sample_every=100, cls="covid", **{"data.size": 32})  # fmt: skip
    capsys.readouterr()
    ck = {name: str(run / "checkpoints" / "last.pt") for name, run in (("both", both), ("one", one))}
    assert main(["synthesize", "--checkpoint", ck["both"], "--n", "4", "--label", "covid", "--out",
                 str(tmp_path / "s0")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on several classes at once" in err, err
    assert main(["synthesize", "--checkpoint", ck["both"], "--n", "4", "--out", str(tmp_path / "s1")]) == 0
    rows = list(csv.DictReader((tmp_path / "s1" / "manifest.csv").read_text().splitlines()))
    assert [r["label"] for r in rows] == [""] * 4 and sorted(p.name for p in (tmp_path / "s1").iterdir()) == [
        "manifest.csv", "manifest.json", "unlabelled"]
    assert main(["synthesize", "--checkpoint", ck["one"], "--n", "4", "--label", "covid", "--out",
                 str(tmp_path / "s2")]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "s2" / "manifest.csv").read_text().splitlines()))
    assert [r["label"] for r in rows] == ["covid"] * 4
    assert main(["synthesize", "--checkpoint", ck["one"], "--n", "4", "--label", "normal", "--out",
                 str(tmp_path / "s3")]) == 2  # fmt: skip
    assert "trained on 'covid' images" in capsys.readouterr().err


def test_the_same_checkpoint_is_the_same_bytes_and_a_generator_is_keyed_by_its_content(tiny_ds, tmp_path):
    """torch.save on a path names the zip archive inside after the file: through atomic_path's random temp name,
    two saves of one object differed in bytes. A study keys its runs by the generator (issue 28: a Ray worker and
    this process train the same generator), so the bytes must not depend on the temp name, and the key must not
    depend on the wall times a trainer checkpoint records, but must change with the weights."""
    import torch

    from cxraug.classify.generators import artifact_hash
    from cxraug.io import load_checkpoint, save_checkpoint

    obj = {"w": torch.arange(6.0).view(2, 3), "step": 3}
    a, b = save_checkpoint(obj, tmp_path / "a.pt"), save_checkpoint(obj, tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()
    ckpt = Trainer(gan_cfg("dcgan-64", **TINY), tiny_ds, tmp_path / "run", progress=False).fit()
    st = load_checkpoint(ckpt)
    st["history"]["images_per_s"] = [[1, 123.0]]  # another run's wall times, the same generator
    save_checkpoint(st, tmp_path / "same-generator.pt")
    assert artifact_hash(ckpt) == artifact_hash(tmp_path / "same-generator.pt")
    art = GeneratorArtifact.load(ckpt)
    w = next(iter(art.weights.values()))
    k = next(iter(w))
    w[k] = w[k] + 1.0
    art.save(tmp_path / "other-generator.pt")
    assert artifact_hash(tmp_path / "other-generator.pt") != artifact_hash(ckpt)
