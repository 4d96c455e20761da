"""The lease vocabulary jobs and downloads share."""

import pytest
from django.db import OperationalError

from core_app.leases import (
    LeaseLost,
    backoff_seconds,
    lease_lost_reason,
    retry_while_database_down,
)


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


class _Flaky:
    """A database step that fails with OperationalError its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("server closed the connection unexpectedly")
        return "done"


def test_a_step_is_tried_again_while_the_database_is_down_then_done_once():
    step = _Flaky(failures=3)
    renewals: list[int] = []

    result = retry_while_database_down(
        step, within=10, what="step", before_retry=lambda: renewals.append(step.calls)
    )

    assert result == "done"
    assert step.calls == 4
    assert renewals == [1, 2, 3]  # before each retry, never before the first try


def test_the_retries_end_with_the_database_error_once_the_time_is_up():
    step = _Flaky(failures=1000)

    with pytest.raises(OperationalError):
        retry_while_database_down(step, within=0.25, what="step")

    assert 2 <= step.calls < 10


def test_what_the_step_raises_beyond_a_database_outage_is_not_retried():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        retry_while_database_down(broken, within=10, what="step")

    assert calls == [1]


def test_what_the_renewal_raises_ends_the_retries():
    step = _Flaky(failures=1)

    def renew() -> None:
        raise LookupError("lease lost")

    with pytest.raises(LookupError):
        retry_while_database_down(step, within=10, what="step", before_retry=renew)

    assert step.calls == 1
