"""benchmarks/common.py: the FLOP count every benchmark reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.unit
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from common import count_flops, ending  # noqa: E402


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x)


def test_a_convolutions_flop_are_counted_and_attributed_to_its_module():
    net, x = Net(), torch.rand(2, 3, 10, 12)
    total, by_module = count_flops(lambda: net(x))
    expected = 2 * 3 * 8 * 3 * 3 * 10 * 12 * 2  # multiply-adds x 2, per output pixel and channel, batch 2
    assert total == expected and by_module["Net"] == expected
    backward, _ = count_flops(lambda: net(x).sum().backward())
    assert backward == 2 * expected  # forward and the weights' gradient (x needs none)


def test_the_ending_names_the_load_and_the_total():
    lines = ending("0.1 0.2 0.3", 12.4)
    assert lines[0].startswith("load average at start 0.1 0.2 0.3, at end ") and lines[1] == "total 12 s"
