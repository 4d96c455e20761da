"""The lease vocabulary jobs and downloads share."""

import pytest

from core_app.leases import LeaseLost, backoff_seconds, lease_lost_reason


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (5, 60.0), (9, 60.0)]
)
def test_backoff_doubles_from_the_base_up_to_the_cap(attempt, expected):
    assert backoff_seconds(attempt, base=5, cap=60) == expected


def test_backoff_waits_at_least_what_the_other_side_asked_for():
    assert backoff_seconds(1, base=5, cap=60, retry_after=30) == 30.0


def test_backoff_never_exceeds_the_cap_even_when_asked_to():
    assert backoff_seconds(1, base=5, cap=60, retry_after=600) == 60.0


@pytest.mark.parametrize(
    ("exists", "cancelled", "reason"),
    [
        (False, False, LeaseLost.GONE),
        (True, True, LeaseLost.CANCELLED),
        (True, False, LeaseLost.LOST),
    ],
)
def test_a_lost_lease_says_why(exists, cancelled, reason):
    assert lease_lost_reason(exists=exists, cancelled=cancelled) is reason


def test_lease_lost_reasons_read_as_the_words_logs_and_rows_use():
    assert [str(reason) for reason in LeaseLost] == ["cancelled", "gone", "lost"]
