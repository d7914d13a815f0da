"""Fixtures every test gets. Helpers live in tests/support (on the path as `support`)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def data_outside_the_checkout(tmp_path_factory):
    """Generated datasets and caches (sigma maps, cells draws) go to a temporary $ZOO_DATA, never into the
    checkout's data/, so the suite neither depends on nor changes what a user generated there."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ZOO_DATA", str(tmp_path_factory.mktemp("zoo_data")))
    yield
    patch.undo()


@pytest.fixture(autouse=True, scope="session")
def compile_cache_outside_the_home(tmp_path_factory):
    """torch.compile's caches (`zoo predict` compiles videos by default) go to a temporary folder, never the user's
    ~/.cache (zoo.core.paths.inductor_cache_dir)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
    yield
    patch.undo()


@pytest.fixture
def one_thread():
    """Tiny convolutions on a busy 2-core machine: a second thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
