"""``runner.identify``: whether planned rows identify an estimator's values, decided by the
estimator's own fit on synthetic values, and the smallest M that does."""

import numpy as np
import pytest

from diffattr.errors import DiffattrError
from diffattr.estimators.settings import estimator_settings
from diffattr.runner.identify import (
    check_rows,
    fit_problem,
    require_identified,
    smallest_subsets,
)
from diffattr.store import mask_to_str


def test_the_fit_decides_by_rank_not_by_count():
    shapley = estimator_settings("shapley")
    # enough rows by count, but the same pair four times: rank 1 over 3 players
    row = np.array([1, 0, 0], dtype=bool)
    masks = np.array([row, ~row] * 4)
    problem = fit_problem(shapley, masks, np.repeat(np.arange(4), 2))
    assert problem is not None and "rank" in problem and "\n" not in problem
    # every coalition once: identified (exact values)
    every = np.array([[(i >> j) & 1 for j in range(3)] for i in range(8)], dtype=bool)
    assert fit_problem(shapley, every, None) is None
    assert fit_problem(shapley, every[:0], None) == "no coalitions are left to fit"


def test_the_smallest_m_is_identified_and_the_one_below_is_not():
    shapley = estimator_settings("shapley")
    n, m0 = 11, 24
    assert check_rows(shapley, n, m0, 0).problem is not None
    m = smallest_subsets(shapley, n, m0, 0)
    assert m is not None and m > m0
    assert check_rows(shapley, n, m, 0).problem is None
    assert check_rows(shapley, n, m - 1, 0).problem is not None
    with pytest.raises(DiffattrError) as err:
        require_identified(shapley, n, m0, 0, what="here", fix=lambda k: f"pass --subsets {k}")
    msg = str(err.value)
    assert msg.startswith("here: shapley on 24 coalitions") and msg.endswith(f"--subsets {m}")
    require_identified(shapley, n, m, 0, what="here", fix=str)  # accepted


def test_rows_equal_to_test_subsets_are_left_out():
    loo = estimator_settings("loo")
    n = 4
    rows = check_rows(loo, n, 8, 0)
    assert rows.problem is None and rows.drawn == n and rows.dropped == 0
    # test subsets of size n - 1 are exactly the leave-one-out rows: nothing is left
    tests = {mask_to_str(np.arange(n) != i) for i in range(n)}
    rows = check_rows(loo, n, 8, 0, tests)
    assert rows.dropped == n and rows.problem == "no coalitions are left to fit"
    assert smallest_subsets(loo, n, 8, 0, tests) is None  # a fixed design: M cannot help
    with pytest.raises(DiffattrError, match="4 equal to test subsets left out.*another --alpha"):
        require_identified(
            loo, n, 8, 0, what="lds", fix=str, exclude=tests, excluded_fix="use another --alpha"
        )
