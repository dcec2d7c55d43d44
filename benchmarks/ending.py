"""The lines every benchmark ends with: other work on a shared machine skews its figures."""

from __future__ import annotations

import os


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ending(load_start: str, elapsed: float) -> list[str]:
    return [f"load average at start {load_start}, at end {load_average()} (other work on the machine skews the figures)",
            f"total {elapsed:.0f} s"]
