"""The admin's shared helpers: buttons on an object's page (ObjectActionsAdmin)."""

import uuid

import pytest
from django.contrib.admin import AdminSite
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from model_bakery import baker

from core_app.admin_actions import ObjectActionsAdmin, object_action
from core_app.models import ApiKey
from queue_app.models import Job, JobStatus


def test_a_button_names_an_object_action_method():
    class Broken(ObjectActionsAdmin):
        object_actions = ("not_a_button",)

        def not_a_button(self, request, obj):
            return None

    with pytest.raises(ImproperlyConfigured, match=r"Broken\.not_a_button"):
        Broken(ApiKey, AdminSite()).get_urls()


def test_each_button_gets_a_named_url_before_the_admins_own():
    class Keys(ObjectActionsAdmin):
        object_actions = ("say_hello",)

        @object_action(path="say-hello", label="Hello")
        def say_hello(self, request, key):
            return None

    first = Keys(ApiKey, AdminSite()).get_urls()[0]

    assert (str(first.pattern), first.name) == (
        "<path:object_id>/say-hello/",
        "core_app_apikey_say_hello",
    )


def test_a_button_for_an_unknown_object_is_404(admin_client, db):
    response = admin_client.post(reverse("admin:queue_app_job_cancel", args=[uuid.uuid4()]))

    assert response.status_code == 404


def test_a_button_needs_the_change_permission(anon_client, django_user_model, server):
    job = baker.make(Job, server=server, target_server_alias="Laptop", generation_params={})
    viewer = django_user_model.objects.create_user(
        "viewer", password="x-long-password", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    anon_client.force_login(viewer)

    response = anon_client.post(reverse("admin:queue_app_job_cancel", args=[job.pk]))

    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
