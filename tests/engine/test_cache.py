"""ArrayCache: atomic memory-mapped entries."""

from __future__ import annotations

import numpy as np

from medtransfer.engine.cache import ArrayCache, key_digest


def test_writer_fills_a_memory_map_that_loads_read_only(tmp_path):
    cache = ArrayCache(tmp_path, "images")
    with cache.writer({"a": 1}, (5, 3), np.uint8) as out:
        assert isinstance(out, np.memmap)
        assert cache.load({"a": 1}) is None  # not visible before the writer commits
        out[:] = np.arange(15, dtype=np.uint8).reshape(5, 3)
    loaded = cache.load({"a": 1})
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    assert np.array_equal(loaded, np.arange(15).reshape(5, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [key_digest({"a": 1})]


def test_store_replaces_a_stale_entry(tmp_path):
    cache = ArrayCache(tmp_path, "x")
    cache.store({"a": 1}, np.zeros(3))
    (tmp_path / key_digest({"a": 1}) / "manifest.json").write_text('{"key": {"a": 2}}')
    assert cache.load({"a": 1}) is None
    assert np.array_equal(cache.store({"a": 1}, np.ones(3)), np.ones(3))
