"""How the admin writes times and durations."""

from datetime import timedelta

from django.utils import timezone

from core_app.display import age, duration


def test_age_is_coarse_and_says_just_now_for_the_last_minute():
    now = timezone.now()

    assert age(now - timedelta(seconds=20)) == "just now"
    assert age(now - timedelta(minutes=5, seconds=30)) == "5\xa0minutes ago"
    assert age(now - timedelta(days=3, hours=4)) == "3\xa0days ago"
    assert age(None) == "—"


def test_duration_shows_minutes_only_when_there_are_any():
    assert duration(42.4) == "42s"
    assert duration(185) == "3m 05s"
    assert duration(None) == "—"
