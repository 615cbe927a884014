"""Issue 14 item 4: arguments validated up front, each with one clear line (exit 2), nothing written."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from badinput.corpus import gray
from cxraug.cli import main


def _one_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("cxraug: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


@pytest.fixture
def tiny(tmp_path):
    """covid: 3 images, normal: an empty class folder."""
    (tmp_path / "d" / "covid").mkdir(parents=True)
    (tmp_path / "d" / "normal").mkdir()
    for i in range(3):
        Image.fromarray(gray(32, i)).save(tmp_path / "d" / "covid" / f"{i}.png")
    return tmp_path / "d"


TRAIN = ["train", "--preset", "dcgan-64", "--data", "phantom:normal=4,covid=4", "-q"]


@pytest.mark.parametrize("extra,fragments", [
    (["--steps", "-1"], ["steps must be an integer >= 1, got -1 (--steps)"]),
    (["--steps", "0"], ["steps must be an integer >= 1, got 0"]),
    (["--batch-size", "0"], ["batch_size must be an integer >= 1, got 0 (--batch-size)"]),
    (["--seed", "-5"], ["seed must be an integer within 0..2^32-1, got -5"]),
    (["--set", "lr_g=-1e-4"], ["lr_g must be a number > 0, got -0.0001 (--set lr_g)"]),
    (["--set", "lr_d=nan"], ["lr_d must be a number > 0"]),
    (["--set", "beta2=1.5"], ["beta2 must be within [0, 1)"]),
    (["--set", "n_critic=0"], ["n_critic must be an integer >= 1"]),
    (["--set", "optimizer=sgd"], ["optimizer must be adam | rmsprop"]),
    (["--set", "steps=[1"], ["override 'steps=[1': invalid YAML value"]),
    (["--set", "data.clahe_tile=0"], ["CLAHE tile grid must be within 1..64, got 0"]),
    (["--set", "data.size=8"], ["size must be within 16..1024, got 8"]),
    (["--set", "data.manifest.view=oblique"], ["manifest view must be one of frontal, pa, ap, lateral, all"]),
    (["--device", "tpu"], ["--device must be auto, cpu, cuda, cuda:N or mps; got 'tpu'"]),
    (["--size", "100"], ["image size must be 4·2^k for this model", "got 100 (--size)"]),
    (["--preset", "wgan-clip-64", "--size", "256"], ["built for 64, 96 or 128 px images, got 256"]),
    # from a review (each a traceback, or silently taken, before):
    (["--set", "diffaug=translate"], ["unknown DiffAugment policies ['translate']", "(--set diffaug)"]),
    (["--set", "g_layout=foo"], ["g_layout: expected a mapping", "got 'foo'"]),
    (["--set", "g_layout.bogus=1"], ["g_layout / d_layout", "bogus"]),
    (["--set", "batch_size=true"], ["batch_size: expected int, got True"]),
    (["--preset", "stylegan2-ada-64", "--set", "loss=hinge"], ["non-saturating logistic loss", "(--set loss)"]),
    (["--preset", "ddpm-64", "--set", "loss=hinge"], ["denoising objective", "loss=hinge has no effect"]),
])  # fmt: skip
def test_bad_training_values_are_one_line(tmp_path, capsys, extra, fragments):
    assert main([*TRAIN, *extra, "--out", str(tmp_path / "runs")]) == 2
    _one_line(capsys, *fragments)
    assert not (tmp_path / "runs").exists()  # refused before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    """It used to fall back to the CPU silently."""
    assert main([*TRAIN, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    _one_line(capsys, "--device cuda asked for, but no CUDA GPU is available here")
    assert main(["evaluate", "--real", "phantom", "--fake", "phantom", "--device", "cuda:0", "--out", str(tmp_path),
                 "-q"]) == 2  # fmt: skip
    _one_line(capsys, "--device cuda:0 asked for")


def test_empty_class_is_refused_and_huge_batch_is_capped(tiny, tmp_path, capsys, caplog):
    """`train --class` on an empty class died in torch.randint; batch 100,000 on 3 images took 17 GB."""
    out = tmp_path / "runs"
    assert main(["train", "--preset", "dcgan-64", "--data", str(tiny), "--class", "normal", "--out", str(out),
                 "-q"]) == 2  # fmt: skip
    _one_line(capsys, "class 'normal' has no readable images in", "'covid': 3")
    assert main(["train", "--preset", "dcgan-64", "--data", str(tiny), "--class", "nope", "--out", str(out),
                 "-q"]) == 2  # fmt: skip
    _one_line(capsys, "class 'nope' is not in")
    assert main(["train", "--preset", "dcgan-64", "--data", str(tiny), "--class", "covid", "--steps", "1",
                 "--batch-size", "100000", "--set", "width=8", "--out", str(out), "-q"]) == 0  # fmt: skip
    assert "note: batch size 100000 capped at the 3 training image(s)" in caplog.text
    (cfg,) = out.glob("train-*/config.yaml")
    assert "batch_size: 3\n" in cfg.read_text()
    assert len(list(out.glob("train-*/checkpoints/last.pt"))) == 1


def test_resume_refuses_a_foreign_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.ones(2)}}, run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run), "-q"]) == 2
    _one_line(capsys, "last.pt is not a cxraug training checkpoint; cannot resume from it")
    assert main(["train", "--resume", str(tmp_path / "nowhere"), "-q"]) == 2
    _one_line(capsys, "checkpoint not found")


def test_config_file_that_is_not_a_mapping(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("- 1\n- 2\n")
    assert main([*TRAIN, "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    _one_line(capsys, "c.yaml: expected a mapping of config keys, got list")
    bad.write_text("steps: [1\n")
    assert main([*TRAIN, "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    _one_line(capsys, "c.yaml: invalid YAML")


@pytest.mark.parametrize("argv,fragment", [
    (["evaluate", "--real", "phantom", "--fake", "phantom", "--k", "0"], "--k must be within 1..n-1"),
    (["evaluate", "--real", "phantom", "--fake", "phantom", "--n", "1"], "--n must be >= 2 images per set, got 1"),
    (["evaluate", "--real", "phantom", "--fake", "phantom", "--n", "10", "--k", "10"], "--k must be within 1..n-1 (9)"),
    (["encoder", "train", "--data", "phantom", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["synthesize", "--checkpoint", "x.pt", "--n", "-1", "--out", "SYN"], "--n must be >= 1, got -1"),
    (["benchmark", "--set", "regimes=[0]"], "regimes must be fractions of the training data within (0, 1]"),
    (["benchmark", "--set", "seeds=[-1]"], "seeds must be integers >= 0"),
    (["benchmark", "--set", "lr=0"], "lr must be a number > 0"),
    (["benchmark", "--set", "split=[0.5,0.5]"], "split must be three fractions"),
    # the Study's own refusals, also before the study folder is made (it used to be left behind, empty)
    (["benchmark", "--set", "protocols=[gan-aug]"], "need `generator: CHECKPOINT` or a `gan:` block"),
    (["benchmark", "--set", "protocols=[bogus]"], "unknown protocols ['bogus']"),
    (["benchmark", "--set", "protocols=[real]", "--set", "operating_point=median"], "operating_point"),
    (["benchmark", "--set", "protocols=[real]", "--set", "standard_aug=[Nope(1)]"], "standard_aug 'Nope(1)'"),
    (["data", "inspect", "phantom:normal=2", "--near-threshold", "65"], "--near-threshold is a pHash bit distance"),
])  # fmt: skip
def test_other_commands_validate_up_front(tmp_path, capsys, argv, fragment):
    argv = [a.replace("SYN", str(tmp_path / "syn")) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "o"), "-q"] if argv[0] != "synthesize" else [*argv, "-q"]) == 2
    _one_line(capsys, fragment)
    assert list(tmp_path.iterdir()) == []


def test_error_lines_stay_one_printable_line(tmp_path, capsys):
    """A non-UTF-8 name in an error message must not turn printing the error into a UnicodeEncodeError."""
    import os

    from cxraug.cli import one_line

    assert one_line("bad\nvalue in caf\udce9.png") == "bad value in caf\\udce9.png"
    missing = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    assert main(["data", "inspect", missing, "-q"]) == 2
    _one_line(capsys, "caf\\xe9: no such file or folder")


def test_report_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "no-study"), "-q"]) == 2
    _one_line(capsys, "no-study")
    assert list(tmp_path.iterdir()) == []
