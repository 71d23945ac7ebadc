"""The schedule engine with an injected clock: DST both ways, anchored intervals, catch-up and overlap."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from engine.schedules import (
    MAX_BUFFERED,
    MAX_CATCHUP,
    MAX_TRACKED_RUNNING,
    CronSchedule,
    IntervalSchedule,
    ScheduleSpec,
    TriggerState,
    fire_key,
    plan_fires,
    preview,
    release_buffered,
    track_running,
)

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def at(text: str, zone: str) -> float:
    """A local wall time; ``fold=1`` picks the second of a repeated time with a ``+fold`` suffix."""
    fold = text.endswith("+fold")
    local = datetime.fromisoformat(text.removesuffix("+fold")).replace(tzinfo=ZoneInfo(zone), fold=int(fold))
    return local.timestamp()


def local(moment: float, zone: str) -> str:
    return datetime.fromtimestamp(moment, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def fires(expression: str, zone: str, start: str, end: str) -> list[str]:
    """Every fire time in ``(start, end]`` as local wall times with their zone abbreviation."""
    schedule = CronSchedule(expression, zone)
    moment, stop, found = at(start, zone), at(end, zone), []
    while (moment := schedule.next_after(moment)) <= stop:
        found.append(local(moment, zone))
    return found


# --- DST: fixed time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expression", "day", "expected"),
    [
        (BERLIN, "30 2 * * *", "2027-03-28", ["2027-03-27 02:30 CET", "2027-03-28 03:00 CEST", "2027-03-29 02:30 CEST"]),
        (NEW_YORK, "30 2 * * *", "2027-03-14", ["2027-03-13 02:30 EST", "2027-03-14 03:00 EDT", "2027-03-15 02:30 EDT"]),
        (BERLIN, "0 2 * * *", "2027-03-28", ["2027-03-27 02:00 CET", "2027-03-28 03:00 CEST", "2027-03-29 02:00 CEST"]),
    ],
)
def test_a_fixed_time_in_the_spring_forward_gap_fires_once_right_after_the_gap(zone, expression, day, expected):
    previous_noon = f"{day[:8]}{int(day[8:]) - 1:02d} 00:00"
    assert fires(expression, zone, previous_noon, f"{day[:8]}{int(day[8:]) + 1:02d} 23:00") == expected


@pytest.mark.parametrize(
    ("zone", "expression", "start", "end", "expected"),
    [
        (BERLIN, "30 2 * * *", "2027-10-30 12:00", "2027-11-01 12:00", ["2027-10-31 02:30 CEST", "2027-11-01 02:30 CET"]),
        (NEW_YORK, "30 1 * * *", "2027-11-06 12:00", "2027-11-08 12:00", ["2027-11-07 01:30 EDT", "2027-11-08 01:30 EST"]),
    ],
)
def test_a_fixed_time_in_the_repeated_fall_back_hour_fires_once_at_its_first_occurrence(
    zone, expression, start, end, expected
):
    assert fires(expression, zone, start, end) == expected


@pytest.mark.parametrize(("zone", "moment"), [(BERLIN, "2027-10-31 02:15+fold"), (NEW_YORK, "2027-11-07 01:15+fold")])
def test_starting_inside_the_second_pass_of_the_repeated_hour_does_not_fire_its_first_occurrence_again(zone, moment):
    expression = "30 2 * * *" if zone == BERLIN else "30 1 * * *"
    schedule = CronSchedule(expression, zone)
    following = schedule.next_after(at(moment, zone))
    assert following > at(moment, zone)
    assert local(following, zone).startswith("2027-11-01" if zone == BERLIN else "2027-11-08")


# --- DST: wildcard hours follow elapsed time -----------------------------------------------------


def test_hourly_expressions_skip_the_missing_hour_and_fire_in_both_repeated_hours():
    assert fires("0 * * * *", BERLIN, "2027-03-28 00:30", "2027-03-28 04:30") == [
        "2027-03-28 01:00 CET", "2027-03-28 03:00 CEST", "2027-03-28 04:00 CEST",
    ]
    assert fires("0 * * * *", NEW_YORK, "2027-11-07 00:30", "2027-11-07 02:30") == [
        "2027-11-07 01:00 EDT", "2027-11-07 01:00 EST", "2027-11-07 02:00 EST",
    ]


def test_wildcard_hour_fires_are_evenly_spaced_in_elapsed_time_across_both_shifts():
    for zone, start, end in [
        (BERLIN, "2027-03-28 00:00", "2027-03-28 06:00"),
        (BERLIN, "2027-10-31 00:00", "2027-10-31 06:00"),
        (NEW_YORK, "2027-03-14 00:00", "2027-03-14 06:00"),
        (NEW_YORK, "2027-11-07 00:00", "2027-11-07 06:00"),
    ]:
        schedule = CronSchedule("*/30 * * * *", zone)
        moment, stop, gaps = at(start, zone), at(end, zone), set()
        previous = schedule.next_after(moment)
        while (moment := schedule.next_after(previous)) <= stop:
            gaps.add(moment - previous)
            previous = moment
        assert gaps == {1800.0}, (zone, start)


def test_preview_notes_the_fires_a_shift_moves():
    spring = preview(CronSchedule("30 2 * * *", BERLIN), at("2027-03-27 12:00", BERLIN), 2)
    assert spring[0].note is not None and "does not exist on 2027-03-28" in spring[0].note
    assert "03:00 CEST" in spring[0].note and spring[1].note is None
    autumn = preview(CronSchedule("30 1 * * *", NEW_YORK), at("2027-11-06 12:00", NEW_YORK), 2)
    assert autumn[0].note is not None and "occurs twice on 2027-11-07" in autumn[0].note and "EDT" in autumn[0].note
    hourly = preview(CronSchedule("0 * * * *", NEW_YORK), at("2027-11-07 00:30", NEW_YORK), 3)
    assert [p.note is not None for p in hourly] == [False, True, False]
    assert hourly[1].note is not None and "-05:00" in hourly[1].note
    quiet = preview(CronSchedule("0 9 * * *", "UTC"), at("2027-03-27 12:00", "UTC"), 5)
    assert [p.note for p in quiet] == [None] * 5


# --- intervals ----------------------------------------------------------------------------------


def test_intervals_are_anchored_never_now_plus_every():
    schedule = IntervalSchedule(10.0, anchor=1000.0)
    assert schedule.next_after(1000.0) == 1010.0
    assert schedule.next_after(1003.7) == 1010.0  # a late beat does not shift the grid
    assert schedule.next_after(1999.99) == 2000.0
    assert schedule.next_after(999.0) == 1000.0
    assert schedule.count_before(1000.0, 1100.0) == 10


def test_an_interval_without_anchor_is_anchored_at_the_whole_second_the_trigger_was_created():
    spec = ScheduleSpec(every="1m")
    assert spec.schedule(created_at=5000.75).next_after(5030.0) == 5060.0
    anchored = ScheduleSpec(every="1h", anchor="2027-01-01T00:30:00Z")
    assert anchored.schedule(created_at=0.0).next_after(at("2027-01-01 05:00", "UTC")) == at("2027-01-01 05:30", "UTC")


def test_fire_key_is_the_trigger_id_and_the_utc_fire_time():
    assert fire_key("tr1", at("2027-03-28 03:00", BERLIN)) == "tr1:2027-03-28T01:00:00Z"
    assert fire_key("tr1", 1.5) == "tr1:1970-01-01T00:00:01.500Z"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cron": "0 0 * * * *"}, "expected 5 fields"),
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "0 * * * *", "timezone": "Mars/Base"}, "unknown timezone"),
        ({"every": "500ms"}, "at least 1s"),
        ({"cron": "0 * * * *", "every": "1m"}, "exactly one"),
        ({"every": "1m", "overlap": "queue"}, "overlap"),
        ({"every": "1m", "catchup": "some"}, "catchup"),
        ({"every": "1m", "anchor": "2027-01-01T00:00:00"}, "UTC offset"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValidationError, match=message):
        ScheduleSpec.model_validate(spec)


# --- catch-up -------------------------------------------------------------------------------------

EVERY_MINUTE = IntervalSchedule(60.0, anchor=0.0)


def plan(now, next_fire_at=600.0, running=0, pending=(), **spec):
    spec_model = ScheduleSpec(every="1m", **spec)
    return plan_fires(spec_model, EVERY_MINUTE, TriggerState(next_fire_at, running, list(pending)), now)


def test_nothing_is_planned_before_the_fire_time():
    assert plan(now=599.9) is None


def test_an_on_time_fire_starts_and_advances_from_the_fire_time():
    fired = plan(now=600.4)
    assert fired is not None and fired.start == [600.0] and fired.next_fire_at == 660.0
    assert (fired.missed, fired.skipped, fired.buffered) == (0, 0, 0)


def test_catchup_latest_starts_the_newest_owed_fire_and_counts_the_rest_missed():
    fired = plan(now=840.0)  # 600, 660, 720, 780, 840 owed
    assert fired is not None and fired.start == [840.0] and fired.missed == 4 and fired.next_fire_at == 900.0


def test_catchup_all_starts_every_owed_fire_within_the_window():
    fired = plan(now=840.0, catchup="all", overlap="allow_all")
    assert fired is not None and fired.start == [600.0, 660.0, 720.0, 780.0, 840.0] and fired.missed == 0


def test_fires_older_than_the_catchup_window_are_missed():
    fired = plan(now=3600.0, catchup="all", overlap="allow_all", catchup_window="2m")
    assert fired is not None and fired.start == [3480.0, 3540.0, 3600.0]
    assert fired.missed == (3480 - 600) // 60
    assert fired.next_fire_at == 3660.0


def test_catchup_all_is_capped():
    fired = plan(now=600.0 + 60 * 150, catchup="all", overlap="allow_all", catchup_window="1d")
    assert fired is not None and len(fired.start) == MAX_CATCHUP and fired.missed == 151 - MAX_CATCHUP
    assert fired.start[-1] == 600.0 + 60 * 150


def test_a_cron_schedule_far_behind_counts_its_misses_without_firing_them():
    schedule = CronSchedule("*/5 * * * *", "UTC")
    spec = ScheduleSpec(cron="*/5 * * * *")
    fired = plan_fires(spec, schedule, TriggerState(0.0), 86_400.0)
    assert fired is not None and fired.start == [86_400.0]
    assert fired.missed == 288


# --- overlap --------------------------------------------------------------------------------------


def test_skip_drops_a_fire_while_one_runs():
    fired = plan(now=600.0, running=1)
    assert fired is not None and fired.start == [] and fired.skipped == 1 and fired.next_fire_at == 660.0


def test_skip_with_catchup_all_starts_only_one():
    fired = plan(now=720.0, catchup="all")
    assert fired is not None and fired.start == [600.0] and fired.skipped == 2


def test_buffer_one_keeps_one_fire_and_skips_the_rest():
    fired = plan(now=720.0, running=1, catchup="all", overlap="buffer_one")
    assert fired is not None and fired.start == [] and fired.pending == [600.0]
    assert (fired.buffered, fired.skipped) == (1, 2)
    again = plan(now=780.0, next_fire_at=780.0, running=1, pending=[600.0], overlap="buffer_one")
    assert again is not None and again.pending == [600.0] and (again.buffered, again.skipped) == (0, 1)


def test_buffer_all_keeps_fires_in_order_up_to_the_cap():
    fired = plan(now=720.0, running=1, catchup="all", overlap="buffer_all")
    assert fired is not None and fired.pending == [600.0, 660.0, 720.0] and fired.buffered == 3
    full = plan(now=600.0, running=1, pending=[float(n) for n in range(MAX_BUFFERED)], overlap="buffer_all")
    assert full is not None and len(full.pending) == MAX_BUFFERED and (full.buffered, full.skipped) == (0, 1)


def test_buffered_fires_start_first_when_nothing_runs():
    fired = plan(now=660.0, next_fire_at=660.0, pending=[600.0], overlap="buffer_all")
    assert fired is not None and fired.start == [600.0] and fired.pending == [660.0]


def test_cancel_other_cancels_the_running_ones_and_starts_the_newest():
    fired = plan(now=720.0, running=2, catchup="all", overlap="cancel_other")
    assert fired is not None and fired.cancel_running and fired.start == [720.0] and fired.skipped == 2
    idle = plan(now=600.0, overlap="cancel_other")
    assert idle is not None and not idle.cancel_running and idle.start == [600.0]


def test_allow_all_starts_regardless_of_running_executions():
    fired = plan(now=600.0, running=5, overlap="allow_all")
    assert fired is not None and fired.start == [600.0] and not fired.cancel_running


def test_running_executions_are_tracked_once_and_up_to_a_bound():
    assert track_running(["a"], "b") == ["a", "b"]
    assert track_running(["a", "b"], "a") == ["a", "b"]
    full = [str(n) for n in range(MAX_TRACKED_RUNNING)]
    assert track_running(full, "new") == full


def test_release_buffered_takes_the_oldest():
    assert release_buffered([1.0, 2.0]) == (1.0, [2.0])
    assert release_buffered([]) == (None, [])
