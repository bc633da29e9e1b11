"""Shared fixtures for the whole test tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real-data folder beside the checkout (../shared/data); skip when a clone lacks it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is missing: real-data tests need the shared data folder beside the checkout")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Runs given no --cache-dir use a throwaway user cache, never the real ~/.cache/medtransfer.

    Hugging Face and torch keep their usual homes (they read them at import), so offline weight lookups behave
    as a user's would.
    """
    home = Path.home() / ".cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", os.environ.get("HF_HOME", str(home / "huggingface")))
        patch.setenv("TORCH_HOME", os.environ.get("TORCH_HOME", str(home / "torch")))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield
