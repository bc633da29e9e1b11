"""Shared fixtures for the whole test tree."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real-data folder beside the checkout (../shared/data); skip when a clone lacks it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is missing: real-data tests need the shared data folder beside the checkout")
    return SHARED_DATA
