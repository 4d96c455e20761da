"""The event log in the admin: read only, newest first, by kind."""

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from events_app.models import Event

KINDS = (
    ("job.", "Jobs"),
    ("batch.", "Batches"),
    ("server.", "Servers"),
    ("queue.", "The queue"),
    ("download.", "Downloads"),
)


class EventPaginator(Paginator):
    """The numbered events have no gaps (the sequencer numbers one after another, pruning
    deletes from the oldest), so the unfiltered count is the span of their ids plus the few
    not numbered yet: three index probes however long the log. Filtered: COUNT(*)."""

    @cached_property
    def count(self) -> int:
        objects = self.object_list
        if isinstance(objects, QuerySet) and not objects.query.where:
            numbered = Event.objects.filter(seq__isnull=False)
            span = numbered.aggregate(low=Min("seq"), high=Max("seq"))
            waiting = Event.objects.filter(seq__isnull=True).count()
            if span["high"] is None:
                return waiting
            return int(span["high"] - span["low"] + 1) + waiting
        return super().count


class KindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return KINDS

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        value = self.value()
        if value in dict(KINDS):
            return queryset.filter(type__startswith=value)
        return queryset


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("seq", "type", "job_id", "batch_id", "server_id", "owner_id", "created_at")
    list_filter = (KindFilter,)
    search_fields = ("=job_id", "=batch_id")
    # The order the triggers wrote them in (the public ids follow it; a new event has its
    # own within moments).
    ordering = ("-id",)
    paginator = EventPaginator
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = (
        "seq",
        "type",
        "job_id",
        "batch_id",
        "server_id",
        "download_id",
        "owner_id",
        "data",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
