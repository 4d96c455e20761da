"""The admin's API key pages: a new key is shown once; keys are revoked by the service."""

from django.contrib.auth import get_user_model
from django.urls import reverse

from core_app.models import ApiKey, UserQuota
from tests.support import new_key


def test_creating_a_key_in_the_admin_shows_it_once(admin_client, admin_user, db):
    response = admin_client.post(
        reverse("admin:core_app_apikey_add"),
        {"name": "tablet", "user": admin_user.pk, "scope": "client"},
        follow=True,
    )

    shown = [str(m) for m in response.context["messages"]]
    raw_key = shown[0].rsplit(" ", 1)[1]
    assert raw_key.startswith("msd_")
    api_client_response = admin_client.get("/api/v1/servers", HTTP_X_API_KEY=raw_key)
    assert api_client_response.status_code == 200
    assert raw_key not in str(list(ApiKey.objects.values_list()))


def test_revoke_action(admin_client, db):
    new_key("old phone")

    admin_client.post(
        reverse("admin:core_app_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [ApiKey.objects.get().pk]},
    )

    assert ApiKey.objects.get().revoked_at is not None


def test_a_users_page_lists_their_keys_read_only(admin_client, db):
    api_key, _ = new_key("kid's tablet", username="kid", scope="client")
    new_key("someone else's", username="other")

    response = admin_client.get(reverse("admin:auth_user_change", args=[api_key.user.pk]))

    assert response.status_code == 200
    inline = next(f for f in response.context["inline_admin_formsets"] if f.formset.model is ApiKey)
    assert [form.original for form in inline] == [api_key]
    assert not inline.has_add_permission
    content = response.content.decode()
    assert "kid&#x27;s tablet" in content
    assert api_key.prefix in content
    assert "someone else" not in content


def test_the_user_list_counts_active_keys(admin_client, db):
    new_key("phone", username="kid", scope="client")
    revoked, _ = new_key("old phone", username="kid", scope="client")
    revoked.revoke()

    response = admin_client.get(reverse("admin:auth_user_changelist"), {"q": "kid"})

    [kid] = response.context["cl"].result_list
    assert kid._keys == 1


def test_the_key_page_picks_its_user_by_autocomplete(admin_client, db):
    new_key("phone", username="kid", scope="client")

    response = admin_client.get(
        "/admin/autocomplete/",
        {"term": "ki", "app_label": "core_app", "model_name": "apikey", "field_name": "user"},
    )

    assert [r["text"] for r in response.json()["results"]] == ["kid"]


def test_a_users_quota_is_set_in_the_admin(admin_client, db):
    alice = get_user_model().objects.create(username="alice")

    response = admin_client.post(
        reverse("admin:core_app_userquota_add"),
        {"user": alice.pk, "max_pending_jobs": "3", "max_images_per_job": ""},
        follow=True,
    )

    assert response.status_code == 200
    quota = UserQuota.objects.get(user=alice)
    assert quota.max_pending_jobs == 3
    assert quota.max_images_per_job is None
    listing = admin_client.get(reverse("admin:core_app_userquota_changelist")).content.decode()
    assert "alice" in listing
