"""From volume arrays to uint8 slices: windowing keeps a constant brain visible."""

from __future__ import annotations


import numpy as np

from medtransfer.data.volume_slices import normalise


def test_constant_brain_is_white_not_blank():
    volume = np.zeros((4, 4, 4))
    volume[1:3, 1:3, 1:3] = 7.0
    for method in ("percentile", "zscore"):
        out = normalise(volume, method)
        assert out[1, 1, 1] == 255 and out[0, 0, 0] == 0
