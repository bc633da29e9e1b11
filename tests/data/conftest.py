"""Fixtures of the data tests: the real MRI volume sets in ../shared/data (skipped where it is missing)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def brats(shared_data: Path) -> Path:
    """One BraTS 2019 patient: t1post, t2, flair and the tumour segmentation on one grid."""
    return shared_data / "mri" / "brats19_2013_10_1"


@pytest.fixture(scope="module")
def cnsl(shared_data: Path) -> Path:
    """A clinical patient whose sequences have their own grids and headers."""
    return shared_data / "mri" / "cnsl_patient"
