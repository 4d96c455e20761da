from django.urls import path

from events_app.views import EventTokenView, event_stream

urlpatterns = [
    path("events", event_stream, name="events"),
    path("events/token", EventTokenView.as_view(), name="events-token"),
]
