"""Notifications (issue 15): signed webhooks and push notifications to people's phones,
delivered by Celery from the event log (events_app), at least once."""
