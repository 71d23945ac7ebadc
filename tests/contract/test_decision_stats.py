"""The DecisionStats contract (bandit counts), run against SQLite and Firestore (see conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.adapters.store_sqlite import SqliteStore
from engine.bandit import EPOCH_HALF_LIVES
from engine.bootstrap import build_decision_stats
from engine.ports import ArmOutcome, DecisionStats, Store
from tests.contract import reward_writer

A, B = "tenant-a", "tenant-b"
T0 = 1_700_000_000.0
DAY = 86_400.0


@pytest.fixture
def stats(store: Store) -> DecisionStats:
    return build_decision_stats(store)


def outcome(
    execution: str,
    arm: str,
    successes: float,
    *,
    tenant: str = A,
    bandit: str = "flow/route",
    at: float = T0,
    half_life: float | None = None,
    marker: str = "reward:route",
) -> ArmOutcome:
    return ArmOutcome(tenant, execution, marker, bandit, arm, successes, 1 - successes, at, half_life)


def test_outcomes_add_up_per_bandit_and_tenant(stats: DecisionStats) -> None:
    assert stats.arm_counts(A, "flow/route") == {}
    assert stats.record_outcome(outcome("ex-1", "fast", 1)) is True
    assert stats.record_outcome(outcome("ex-2", "fast", 0.5)) is True
    assert stats.record_outcome(outcome("ex-3", "slow", 0)) is True
    assert stats.record_outcome(outcome("ex-1", "fast", 1, bandit="flow/other", marker="reward:other")) is True
    assert stats.record_outcome(outcome("ex-1", "fast", 1, tenant=B)) is True
    assert stats.arm_counts(A, "flow/route") == {"fast": (1.5, 0.5), "slow": (0.0, 1.0)}
    assert stats.arm_counts(A, "flow/other") == {"fast": (1.0, 0.0)}
    assert stats.arm_counts(B, "flow/route") == {"fast": (1.0, 0.0)}


def test_an_outcome_is_counted_once_per_execution_and_marker(stats: DecisionStats) -> None:
    assert stats.record_outcome(outcome("ex-1", "fast", 1)) is True
    assert stats.record_outcome(outcome("ex-1", "fast", 1)) is False
    assert stats.record_outcome(outcome("ex-1", "slow", 0)) is False  # the marker decides, not the arm
    assert stats.record_outcome(outcome("ex-1", "fast", 1, marker="reward:other")) is True
    assert stats.arm_counts(A, "flow/route") == {"fast": (2.0, 0.0)}


def test_concurrent_rewards_of_one_arm_are_all_counted_and_duplicates_never(stats: DecisionStats) -> None:
    counted: list[bool] = []

    def reward(n: int) -> None:
        counted.append(stats.record_outcome(outcome(f"ex-{n % 4}", "fast", 1)))

    threads = [threading.Thread(target=reward, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counted) == [False] * 4 + [True] * 4
    assert stats.arm_counts(A, "flow/route") == {"fast": (4.0, 0.0)}


def test_decayed_counts_weigh_each_outcome_by_its_age(stats: DecisionStats) -> None:
    stats.record_outcome(outcome("ex-1", "fast", 1, at=T0, half_life=DAY))
    stats.record_outcome(outcome("ex-2", "fast", 0, at=T0 + DAY, half_life=DAY))
    stats.record_outcome(outcome("ex-3", "slow", 1, at=T0 + 2 * DAY, half_life=DAY))
    stats.record_outcome(outcome("ex-4", "slow", 1, at=T0))  # not recorded with this half-life
    decayed = stats.arm_counts(A, "flow/route", half_life=DAY, now=T0 + 2 * DAY)
    assert decayed.keys() == {"fast", "slow"}
    assert decayed["fast"] == pytest.approx((0.25, 0.5))
    assert decayed["slow"] == pytest.approx((1.0, 0.0))
    assert stats.arm_counts(A, "flow/route", half_life=2 * DAY, now=T0) == {}  # another half-life: its own counts
    assert stats.arm_counts(A, "flow/route") == {"fast": (1.0, 1.0), "slow": (2.0, 0.0)}


def test_decayed_counts_carry_across_an_epoch_and_fade_after_two(stats: DecisionStats) -> None:
    epoch = EPOCH_HALF_LIVES * 60.0
    start = (T0 // epoch + 1) * epoch - 30.0  # 30 s before an epoch ends
    stats.record_outcome(outcome("ex-1", "fast", 1, at=start, half_life=60.0))
    stats.record_outcome(outcome("ex-2", "fast", 1, at=start + 60.0, half_life=60.0))  # in the next epoch
    assert stats.arm_counts(A, "flow/route", half_life=60.0, now=start + 60.0)["fast"] == pytest.approx((1.5, 0.0))
    assert stats.arm_counts(A, "flow/route", half_life=60.0, now=start + 2 * epoch + 60.0) == {}


def test_a_reward_process_killed_anywhere_loses_and_doubles_nothing(store: Store, tmp_path: Path) -> None:
    """SIGKILL a process mid-way through its rewards, then count every reward again (as a
    redelivery would): each is counted exactly once, in the all-time and the decayed counts."""
    stats = build_decision_stats(store)
    where = store.path if isinstance(store, SqliteStore) else store.client.project  # type: ignore[attr-defined]
    backend = "sqlite" if isinstance(store, SqliteStore) else "firestore"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.contract.reward_writer", backend, str(where)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert child.stdout is not None
    for _ in range(20):
        assert child.stdout.readline(), "the writer stopped before it was killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    recounted = [stats.record_outcome(reward_writer.outcome(n)) for n in range(reward_writer.REWARDS)]
    assert 0 < recounted.count(False) < reward_writer.REWARDS  # some were counted before the kill
    assert stats.arm_counts(A, "crash/route") == {"fast": (float(reward_writer.REWARDS), 0.0)}
    now = reward_writer.outcome(reward_writer.REWARDS - 1).at
    expected = sum(2 ** (-(now - reward_writer.outcome(n).at) / 3600.0) for n in range(reward_writer.REWARDS))
    assert stats.arm_counts(A, "crash/route", half_life=3600.0, now=now)["fast"] == pytest.approx((expected, 0.0))
