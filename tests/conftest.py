import pytest
import torch


@pytest.fixture
def float64():
    """Run a test with float64 as the default dtype (restored afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def fresh_batching_warnings():
    """Each test sees the vmap-fallback warning anew (a process shows it once per kind of model)."""
    from warpgrad.core import batching

    batching._WARNED.clear()
    yield


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny per-example ops are slower on two; restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def no_kanji_render_cache(monkeypatch):
    """Tests never write rendered KanjiVG drawings into the user's data root
    (``tests/test_kanjivg_cache.py`` turns the cache on again with a temporary root)."""
    monkeypatch.setenv("WARPGRAD_NO_RENDER_CACHE", "1")
