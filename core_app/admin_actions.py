"""Helpers for admin actions that call services, shared by the apps' admins."""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from core_app.errors import MobileSDError


def service_error(exc: MobileSDError) -> str:
    """The readable message of a service's refusal (Conflict, NotFound, InvalidInput)."""
    if exc.fields:
        return " ".join(text for texts in exc.fields.values() for text in texts)
    return exc.message


def apply_to_each(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    service: Callable[..., Any],
    *,
    key: str,
    done: str,
) -> int:
    """Call `service(<key>=obj.pk)` for each selected object; a refusal (409, 404, 400) is
    reported for that object and the others go on. `done` is formatted with `count`."""
    count = 0
    obj: Model
    for obj in queryset:
        try:
            service(**{key: obj.pk})
            count += 1
        except MobileSDError as exc:
            model_admin.message_user(request, f"{obj.pk}: {service_error(exc)}", messages.WARNING)
    model_admin.message_user(request, done.format(count=count), messages.SUCCESS)
    return count
