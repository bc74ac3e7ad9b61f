"""monitor.dedup: the hashed window answers as a window of the last distinct ids does."""

from __future__ import annotations

import pickle
import random
from collections import deque

import pytest

import monitor.dedup
from monitor.dedup import RecentIds, id_hash


class Reference:
    """The window as a set of the last ``capacity`` distinct ids and their order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.members: set[str] = set()
        self.order: deque[str] = deque()

    def seen(self, event_id: str) -> bool:
        if event_id in self.members:
            return True
        if self.capacity:
            self.members.add(event_id)
            self.order.append(event_id)
            if len(self.members) > self.capacity:
                self.members.discard(self.order.popleft())
        return False


@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 17, 100, 1000])
@pytest.mark.parametrize("young", [1, 5, 64, 8192])
def test_answers_equal_the_reference_one_by_one_in_batches_and_across_pickling(
    capacity: int, young: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor.dedup, "YOUNG", young)
    rng = random.Random(capacity * 31 + young)
    # ids from a pool about the window's size, so that many come back just inside and
    # just outside it; a lone surrogate is a valid JSON string too
    pool = [f"id-{i}" for i in range(max(4, 2 * capacity))] + ["\ud800", "é"]
    reference, window = Reference(capacity), RecentIds(capacity)
    answers: set[bool] = set()
    for step in range(300):
        ids = [rng.choice(pool) for _ in range(rng.choice([1, 2, 7, 40, 3 * capacity + 1]))]
        expected = [reference.seen(i) for i in ids]
        got = [window.seen(i) for i in ids] if step % 3 == 0 else window.seen_many(ids)
        assert got == expected, f"step {step}"
        answers.update(got)
        assert len(window) == len(reference.members)
        if step % 50 == 49:
            window = pickle.loads(pickle.dumps(window))
    assert answers == ({False} if capacity == 0 else {False, True})  # both were put to it


def test_batches_away_from_the_window_edge_are_answered_without_the_per_id_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The array path: batches no longer than the window, with repeats inside the batch and
    of ids well inside the window, and ids that left it long ago coming back."""
    rng = random.Random(5)
    reference, window = Reference(1000), RecentIds(1000)
    per_id_calls = 0
    per_id = RecentIds._seen_each

    def counted(self: RecentIds, *args: object) -> list[bool]:
        nonlocal per_id_calls
        per_id_calls += 1
        return per_id(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RecentIds, "_seen_each", counted)
    fresh = iter(range(10**9))
    recent: deque[str] = deque(maxlen=300)
    answers: list[bool] = []
    for step in range(200):
        ids = [f"new-{next(fresh)}" for _ in range(rng.randint(1, 150))]
        ids += rng.sample(list(recent), min(len(recent), rng.randint(0, 40)))  # in the window
        ids += ids[: rng.randint(0, 5)]  # repeats within the batch
        if step % 20 == 19:
            ids.append(f"new-{step}")  # recorded more than 1000 ids ago: out of the window
        rng.shuffle(ids)
        expected = [reference.seen(i) for i in ids]
        assert window.seen_many(ids) == expected, f"step {step}"
        assert len(window) == len(reference.members)
        recent.extend(ids)
        answers += expected
    assert per_id_calls < 10, f"{per_id_calls} of 200 batches went id by id"
    assert window.seen_many([]) == []
    assert True in answers and False in answers


def test_a_window_pickled_before_hashing_restores_with_its_ids() -> None:
    old = RecentIds.__new__(RecentIds)
    state = (None, {"capacity": 3, "_members": {"a", "b", "c"}, "_order": deque("abc")})
    old.__setstate__(state)
    assert len(old) == 3
    assert old.seen("c") and old.seen("a")
    assert not old.seen("d")  # the window now drops "a", the oldest
    assert not old.seen("a")


def test_distinct_ids_get_distinct_hashes() -> None:
    ids = [f"{random.Random(2).getrandbits(128) + i:032x}" for i in range(100_000)]
    assert len({id_hash(i) for i in ids}) == len(ids)
    assert id_hash("a") == id_hash("a")
