"""``cxraug demo``: the whole pipeline, offline, on the embedded phantoms (the demo itself is :mod:`cxraug.demo`)."""

from __future__ import annotations

import argparse


def cmd_demo(a: argparse.Namespace) -> int:
    from cxraug.demo import run_demo

    run_demo(a.out, steps=a.steps, width=a.width, epochs=a.epochs, seed=a.seed, progress=not a.quiet)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug demo``."""
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline offline on embedded phantoms (CPU, a few minutes)",
        description="Phantom CXRs -> DCGAN -> metrics -> classifier benchmark -> HTML report, in a new run folder.",
    )
    p.add_argument("--steps", type=int, default=300, help="GAN training steps; default %(default)s")
    p.add_argument("--width", type=int, default=24, help="GAN width (ngf/ndf); default %(default)s")
    p.add_argument("--epochs", type=int, default=6, help="classifier epochs; default %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
