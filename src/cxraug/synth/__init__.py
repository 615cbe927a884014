"""Synthesis and rebalancing: generate to a target balance, with every synthetic image marked."""

from cxraug.synth.balance import plan_balance
from cxraug.synth.generate import generate
from cxraug.synth.write import write_synthetic

__all__ = ["generate", "plan_balance", "write_synthetic"]
