import importlib

import pytest


@pytest.fixture(params=["c", "py"])
def codec(request):
    """Each codec implementation, imported directly: a missing extension fails, never falls back."""
    name = "a6fast._codec" if request.param == "c" else "a6fast._codec_py"
    return importlib.import_module(name)
