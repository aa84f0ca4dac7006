import math
import operator

import pytest

from codemix.analysis._parallel import cpu_count, pmap


@pytest.mark.parametrize("jobs", [1, 2])
def test_pmap_keeps_the_order_of_its_items(jobs):
    items = [(i, 10 * i) for i in range(7)]
    assert list(pmap(operator.add, items, jobs)) == [11 * i for i in range(7)]


def test_an_error_in_a_worker_reaches_the_caller():
    with pytest.raises(ValueError, match="math domain error"):
        list(pmap(math.sqrt, [(4.0,), (-1.0,)], 2))


def test_cpu_count_is_positive():
    assert cpu_count() >= 1
