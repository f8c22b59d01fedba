"""recllm.eval.run.select_users: the first N users, or a seeded sample that is the same for every
method scored with the same seed."""

from __future__ import annotations

import pytest

from recllm.eval.run import select_users


def test_first_n_all_and_seeded_sample():
    users = list(range(100))
    assert select_users(users, 0) == users
    assert select_users(users, 500, seed=3) == users  # more than there are: everyone
    assert select_users(users, 10) == users[:10]
    sample = select_users(users, 10, seed=3)
    assert sample == select_users(users, 10, seed=3)  # same seed, same users
    assert sample != users[:10] and sample == sorted(sample) and len(set(sample)) == 10
    assert select_users(users, 10, seed=4) != sample
    with pytest.raises(ValueError, match="n must be >= 0"):
        select_users(users, -1)
