"""The admin site's registry: every project model has pages that render and search."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from model_bakery import baker

from core_app.models import ApiKey
from events_app.models import Event
from events_app.sequencer import events_sequence
from notifications_app.models import FanoutCursor, WebhookDelivery
from queue_app.models import Job
from servers_app.models import Server
from tests.support import new_key


def registered_models():
    return [model for model in admin.site._registry if model._meta.app_label.endswith("_app")]


def project_models():
    return {m for m in apps.get_models() if m._meta.app_label.endswith("_app")}


def inline_models():
    return {
        inline.model
        for model_admin in admin.site._registry.values()
        for inline in model_admin.inlines
    }


def test_every_project_model_has_an_admin_page():
    # JobImage rows are shown large on their job's page and in the gallery instead; JobCount
    # rows are the database's own bookkeeping (queue_app/counts.py), shown as the totals;
    # the EventLog row is the event log's (its pruning mark).
    # JobInput rows are shown as their job's input images, on its page.
    # a JobPreview lives only while its job runs, shown on that job's page.
    missing = project_models() - set(registered_models()) - inline_models()

    assert {m._meta.label for m in missing} == {
        "queue_app.JobImage",
        "queue_app.JobCount",
        "events_app.EventLog",
        "queue_app.JobInput",
        "queue_app.JobPreview",
    }
    assert {
        "core_app.ApiKey",
        "servers_app.Server",
        "servers_app.CachedModel",
        "queue_app.Job",
        "civitai_app.Download",
        "civitai_app.CivitaiSettings",
        "notifications_app.PushTarget",
        "notifications_app.PushMessage",
    } <= {m._meta.label for m in registered_models()}


def make_instance(model, job):
    """A saved instance of `model` that its change page can show."""
    if model is Job:
        return job
    if model is Server:
        return job.server
    if model is ApiKey:
        return new_key("phone")[0]
    if model is Event:  # written by the database (the job's), shown once numbered
        events_sequence()
        return Event.objects.order_by("-seq").first()
    if model is FanoutCursor:  # the one row, made by its migration
        return FanoutCursor.objects.get_or_create(pk=1)[0]
    if model is WebhookDelivery:  # to an endpoint or a callback URL
        return baker.make(model, callback_url="http://10.0.0.5/hook", _fill_optional=False)
    return baker.make(model, _fill_optional=False)


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m._meta.label)
def test_changelist_and_search_render(admin_client, job, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")

    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": "lighthouse"}).status_code == 200


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m._meta.label)
def test_change_page_renders(admin_client, job, model):
    obj = make_instance(model, job)
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])

    assert admin_client.get(url).status_code == 200
