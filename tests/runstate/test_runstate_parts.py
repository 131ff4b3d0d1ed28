"""runstate.parts: work split into parts in forked children, with the same results as in one
process, and every failed child's part run again in the parent."""

from __future__ import annotations

import os

import numpy as np
import pytest

from runstate import parts
from runstate.parts import contiguous_shares, default_parts, run_in_parts

needs_fork = pytest.mark.skipif(not parts.can_fork(), reason="parts run in forked children on Linux only")


def where_and_what(part: int, num_parts: int) -> tuple[int, int, list[int]]:
    """(process, part, this part's share of range(10))."""
    return os.getpid(), part, list(range(10))[part::num_parts]


@needs_fork
def test_parts_run_in_children_and_come_back_in_order():
    results = run_in_parts(where_and_what, 3)
    assert [part for _, part, _ in results] == [0, 1, 2]
    assert sorted(sum((share for _, _, share in results), [])) == list(range(10))
    processes = [pid for pid, _, _ in results]
    assert processes[0] == os.getpid()
    assert len(set(processes)) == 3  # each other part in its own child


def test_one_part_runs_here():
    assert run_in_parts(where_and_what, 1) == [(os.getpid(), 0, list(range(10)))]
    assert run_in_parts(where_and_what, 0) == [(os.getpid(), 0, list(range(10)))]


@needs_fork
def test_a_child_that_dies_has_its_part_run_here():
    parent = os.getpid()

    def work(part: int, num_parts: int):
        if os.getpid() != parent:
            os._exit(3)  # killed before sending anything
        return part * 10

    assert run_in_parts(work, 3) == [0, 10, 20]


@needs_fork
def test_an_error_in_a_child_is_raised_here_by_the_part_run_again():
    calls = []

    def work(part: int, num_parts: int):
        calls.append((os.getpid(), part))
        if part == 1:
            raise ValueError("part 1 is malformed")
        return part

    with pytest.raises(ValueError, match="part 1 is malformed"):
        run_in_parts(work, 2)
    assert calls == [(os.getpid(), 0), (os.getpid(), 1)]  # the parent ran both (the child's call is its own)


@needs_fork
def test_a_result_that_cannot_be_sent_is_computed_here():
    parent = os.getpid()

    def work(part: int, num_parts: int):
        if os.getpid() != parent:
            return lambda: part  # a closure does not pickle: the child cannot send it
        return part

    assert run_in_parts(work, 2) == [0, 1]


def test_default_parts_follow_the_size_and_the_cpus(monkeypatch):
    monkeypatch.setattr(parts, "can_fork", lambda: True)
    monkeypatch.setattr(parts, "usable_cpus", lambda: 2)
    assert default_parts(5, 8) == 1  # too small to split
    assert default_parts(17, 8) == 2
    assert default_parts(1000, 8) == 2  # one part per usable CPU
    monkeypatch.setattr(parts, "usable_cpus", lambda: 64)
    assert default_parts(1000, 8) == parts.MAX_PARTS
    monkeypatch.setattr(parts, "can_fork", lambda: False)
    assert default_parts(1000, 8) == 1


def test_contiguous_shares_cut_at_equal_shares_of_the_sizes():
    assert contiguous_shares([1, 1, 1, 1], 2).tolist() == [0, 2, 4]
    assert contiguous_shares([5, 1, 1, 1, 1, 1], 2).tolist() == [0, 1, 6]  # 5 of 10 then the rest
    assert contiguous_shares([100, 1], 3).tolist() == [0, 0, 0, 2]  # an item over a share: parts before it are empty
    assert contiguous_shares([], 2).tolist() == [0, 0, 0]
    assert contiguous_shares([0, 0, 3], 3).tolist() == [0, 2, 2, 3]
    bounds = contiguous_shares(np.random.default_rng(0).integers(0, 50, 200), 4)
    assert bounds[0] == 0 and bounds[-1] == 200 and np.all(np.diff(bounds) >= 0)
