import pytest
from hypothesis import given
from hypothesis import strategies as st

from codemix.core.errors import CodemixError
from codemix.core.units import format_count, parse_count


@pytest.mark.parametrize(
    ("text", "value"),
    [("200B", 2e11), ("470M", 4.7e8), ("2.8b", 2.8e9), ("1.5k", 1500), ("3e6", 3e6), (42, 42)],
)
def test_parse(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["", "lots", "12Q", "1.2.3M", True])
def test_parse_rejects(bad):
    with pytest.raises(CodemixError, match="tokens"):
        parse_count(bad, "tokens")


@given(st.floats(1, 1e14))
def test_round_trip(x):
    assert parse_count(format_count(x, digits=12)) == pytest.approx(x, rel=1e-9)
