"""Query parameters of the job list."""

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from queue_app.models import Job, JobStatus


class JobFilter(django_filters.FilterSet):
    """`status`, `owner` (a username) and `order` (asc|desc by creation, default desc). Bad
    values are a 400. The view limits a client key to its own user's jobs before these."""

    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    owner = django_filters.CharFilter(method="filter_owner", max_length=150)
    order = django_filters.ChoiceFilter(
        choices=[("asc", "asc"), ("desc", "desc")], method="filter_order"
    )

    class Meta:
        model = Job
        fields = ["status"]

    def filter_owner(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        # By the user's id, not a join on the username: the list's total then comes from
        # the job counts (queue_app.counts), which know owners by id.
        user = get_user_model().objects.filter(username=value).only("pk").first()
        return queryset.filter(owner_id=user.pk) if user is not None else queryset.none()

    def filter_order(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        return queryset  # applied in `qs` so that the default order holds without it

    @property
    def qs(self) -> QuerySet[Job]:
        queryset = super().qs
        ascending = self.form.cleaned_data.get("order") == "asc" if self.is_bound else False
        return queryset.order_by(*(("created_at", "id") if ascending else ("-created_at", "-id")))
