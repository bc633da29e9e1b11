"""How many loader workers a run uses by default: decided without importing torch."""

from __future__ import annotations

import os


def default_workers() -> int:
    """Half the cores, at most 8: decoding runs beside the model without starving it."""
    return min(8, max(0, (os.cpu_count() or 1) // 2))
