"""Fixtures of the proxy_train tests."""

import pytest

from ._corpus import _slim, _stack


@pytest.fixture
def corpus(tmp_path):
    """A SlimPajama-like and a Stack-like corpus under tmp_path/slim and tmp_path/stack."""
    records = _slim(tmp_path / "slim")
    _stack(tmp_path / "stack")
    return records
