"""/api/v1/servers and /api/v1/servers/<alias>."""

import pytest
from model_bakery import baker

from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.support import TIMESTAMP_RE, assert_error, db_snapshot

SERVER_KEYS = {
    "alias",
    "api_url",
    "apiUrl",
    "username",
    "authUser",
    "has_password",
    "enabled",
    "slots",
    "models_dir",
    "is_online",
    "last_checked_at",
    "last_seen_at",
    "last_error",
    "loaded_checkpoint",
    "paused",
    "paused_at",
    "quarantine",
    "consecutive_failures",
    "created_at",
    "updated_at",
}


def test_create_with_snake_case_names(client, db):
    response = client.post(
        "/api/v1/servers",
        {"alias": "Laptop", "api_url": "http://192.168.1.20:7860", "slots": 2},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "Server configuration added successfully."
    assert set(body["server"]) == SERVER_KEYS
    assert body["server"]["alias"] == "Laptop"
    assert body["server"]["api_url"] == "http://192.168.1.20:7860"
    assert body["server"]["slots"] == 2
    assert body["server"]["enabled"] is True
    assert body["server"]["has_password"] is False
    assert TIMESTAMP_RE.match(body["server"]["created_at"])
    assert Server.objects.get().slots == 2


def test_create_with_the_original_names(client, db):
    response = client.post(
        "/api/v1/servers",
        {
            "alias": "Desktop",
            "apiUrl": "https://gpu-box:7860",
            "auth": {"username": "sd", "password": "s3cret"},
        },
        format="json",
    )

    assert response.status_code == 201
    server = Server.objects.get(alias="Desktop")
    assert (server.api_url, server.username, server.password) == (
        "https://gpu-box:7860",
        "sd",
        "s3cret",
    )
    assert response.json()["server"]["apiUrl"] == "https://gpu-box:7860"


def test_password_is_never_returned(client, db):
    body = {"alias": "A", "api_url": "http://h:1", "username": "u", "password": "s3cret"}
    created = client.post("/api/v1/servers", body, format="json")

    for response in (created, client.get("/api/v1/servers"), client.get("/api/v1/servers/A")):
        assert "s3cret" not in response.content.decode()
        body = response.json()
        shown = body[0] if isinstance(body, list) else body.get("server", body)
        assert "password" not in shown
    assert client.get("/api/v1/servers/A").json()["has_password"] is True


def test_list_is_a_plain_array_sorted_by_alias(client, db):
    baker.make(Server, alias="b", api_url="http://b:1")
    baker.make(Server, alias="a", api_url="http://a:1")

    response = client.get("/api/v1/servers")

    assert response.status_code == 200
    assert [server["alias"] for server in response.json()] == ["a", "b"]


def test_get_one_by_alias(client, server):
    body = client.get("/api/v1/servers/Laptop").json()

    assert set(body) == SERVER_KEYS
    assert body["alias"] == "Laptop"


def test_alias_with_spaces_is_addressable(client, db):
    client.post("/api/v1/servers", {"alias": "Gaming PC", "api_url": "http://x:1"}, format="json")

    assert client.get("/api/v1/servers/Gaming%20PC").json()["alias"] == "Gaming PC"


def test_unknown_alias_is_404(client, db):
    for method in ("get", "put", "patch", "delete"):
        response = getattr(client, method)("/api/v1/servers/Nope", {}, format="json")
        assert_error(response, 404, "server_not_found")


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"api_url": "http://x:1"}, "alias", "validation_error"),
        ({"alias": "A"}, "api_url", "validation_error"),
        ({"alias": "A", "api_url": "ftp://x"}, "api_url", "invalid_url"),
        ({"alias": "A", "api_url": "not a url"}, "api_url", "invalid_url"),
        ({"alias": "A", "api_url": "http://"}, "api_url", "invalid_url"),
        ({"alias": "A", "api_url": "http://x:99999"}, "api_url", "invalid_url"),
        ({"alias": "A", "api_url": "http://x:1", "slots": 0}, "slots", "validation_error"),
        ({"alias": "A", "api_url": "http://x:1", "slots": "two"}, "slots", "validation_error"),
        (
            {"alias": "A", "api_url": "http://x:1", "enabled": "maybe"},
            "enabled",
            "validation_error",
        ),
        ({"alias": "a/b", "api_url": "http://x:1"}, "alias", "validation_error"),
        ({"alias": "   ", "api_url": "http://x:1"}, "alias", "validation_error"),
        ({"alias": "any", "api_url": "http://x:1"}, "alias", "validation_error"),
        ({"alias": "A", "api_url": "http://x:1", "auth": "user:pass"}, "auth", "validation_error"),
        ({"alias": "x" * 101, "api_url": "http://x:1"}, "alias", "validation_error"),
    ],
)
def test_invalid_server_is_refused_and_stores_nothing(client, db, body, field, code):
    before = db_snapshot()

    response = client.post("/api/v1/servers", body, format="json")

    error = assert_error(response, 400, code)
    assert field in error["fields"]
    assert db_snapshot() == before


def test_duplicate_alias_is_refused(client, server):
    response = client.post(
        "/api/v1/servers", {"alias": "Laptop", "api_url": "http://other:1"}, format="json"
    )

    assert "alias" in assert_error(response, 400, "validation_error")["fields"]
    assert Server.objects.get().api_url == "http://127.0.0.1:7860"


def test_put_replaces_the_configuration(client, db):
    baker.make(Server, alias="Laptop", api_url="http://a:1", slots=3, enabled=False)

    response = client.put(
        "/api/v1/servers/Laptop", {"alias": "Laptop", "apiUrl": "http://b:2"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["message"] == "Server configuration updated successfully."
    server = Server.objects.get()
    assert (server.api_url, server.slots, server.enabled) == ("http://b:2", 1, True)


def test_put_with_the_original_auth_names(client, server):
    client.put(
        "/api/v1/servers/Laptop",
        {"alias": "Laptop", "apiUrl": "http://b:2", "authUser": "me", "authPass": "pw"},
        format="json",
    )

    server.refresh_from_db()
    assert (server.username, server.password) == ("me", "pw")


def test_update_without_password_keeps_it(client, db):
    baker.make(Server, alias="L", api_url="http://a:1", username="u", password="keep")

    client.patch("/api/v1/servers/L", {"api_url": "http://a:1/sd"}, format="json")
    client.put(
        "/api/v1/servers/L", {"alias": "L", "api_url": "http://a:1", "username": "u"}, format="json"
    )

    assert Server.objects.get().password == "keep"


# --- credentials across updates ------------------------------------------------------------


@pytest.fixture
def secured(db) -> Server:
    return baker.make(
        Server, alias="L", api_url="http://gpu:7860", username="sd", password="s3cret"
    )


def credentials_of(server: Server) -> tuple[str, str]:
    server.refresh_from_db()
    return server.username, server.password


def test_output_shows_the_username_as_auth_user_and_never_the_password(client, secured):
    shown = client.get("/api/v1/servers/L").json()

    assert (shown["authUser"], shown["username"], shown["has_password"]) == ("sd", "sd", True)
    assert "s3cret" not in str(shown)


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_without_credentials_on_the_same_origin_keeps_them(client, secured, method):
    response = getattr(client, method)(
        "/api/v1/servers/L", {"alias": "L", "apiUrl": "http://GPU:7860/sd"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["message"] == "Server configuration updated successfully."
    assert response.json()["server"]["authUser"] == "sd"
    assert credentials_of(secured) == ("sd", "s3cret")


def test_default_port_is_the_same_origin(client, db):
    server = baker.make(Server, alias="L", api_url="https://gpu", username="sd", password="pw")

    client.patch("/api/v1/servers/L", {"api_url": "https://gpu:443/sd"}, format="json")

    assert credentials_of(server) == ("sd", "pw")


@pytest.mark.parametrize(
    "url", ["http://other:7860", "http://gpu:7861", "https://gpu:7860", "http://gpu.evil:7860"]
)
@pytest.mark.parametrize("method", ["put", "patch"])
def test_new_origin_without_a_password_clears_it_and_says_so(client, secured, method, url):
    response = getattr(client, method)(
        "/api/v1/servers/L", {"alias": "L", "apiUrl": url}, format="json"
    )

    assert response.status_code == 200
    assert "password was cleared" in response.json()["message"]
    assert response.json()["server"]["has_password"] is False
    assert credentials_of(secured) == ("sd", "")


def test_new_origin_with_the_echoed_username_and_empty_password_clears_it(client, secured):
    response = client.put(
        "/api/v1/servers/L",
        {"alias": "L", "apiUrl": "http://other:7860", "authUser": "sd", "authPass": ""},
        format="json",
    )

    assert "password was cleared" in response.json()["message"]
    assert credentials_of(secured) == ("sd", "")


def test_new_origin_with_a_password_stores_it(client, secured):
    response = client.put(
        "/api/v1/servers/L",
        {"alias": "L", "apiUrl": "http://other:7860", "auth": {"username": "me", "password": "n"}},
        format="json",
    )

    assert response.json()["message"] == "Server configuration updated successfully."
    assert credentials_of(secured) == ("me", "n")


@pytest.mark.parametrize("url", ["http://gpu:7860", "http://gpu:7860/sdapi"])
def test_original_ui_echo_of_auth_user_with_empty_auth_pass_keeps_the_password(
    client, secured, url
):
    response = client.put(
        "/api/v1/servers/L",
        {"alias": "L", "apiUrl": url, "authUser": "sd", "authPass": ""},
        format="json",
    )

    assert response.json()["message"] == "Server configuration updated successfully."
    assert credentials_of(secured) == ("sd", "s3cret")


def test_new_username_with_empty_password_clears_the_password(client, secured):
    client.patch("/api/v1/servers/L", {"authUser": "other", "authPass": ""}, format="json")

    assert credentials_of(secured) == ("other", "")


def test_empty_password_alone_clears_it(client, secured):
    client.patch("/api/v1/servers/L", {"password": ""}, format="json")

    assert credentials_of(secured) == ("sd", "")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "", "password": ""},
        {"authUser": "", "authPass": ""},
        {"auth": {"username": "", "password": ""}},
        {"username": ""},
    ],
)
def test_empty_username_clears_both(client, secured, body):
    response = client.patch("/api/v1/servers/L", body, format="json")

    assert response.json()["server"]["authUser"] == ""
    assert credentials_of(secured) == ("", "")


def test_new_password_replaces_the_stored_one(client, secured):
    client.patch("/api/v1/servers/L", {"authPass": "n3w"}, format="json")

    assert credentials_of(secured) == ("sd", "n3w")


def test_auth_null_clears_the_credentials(client, db):
    baker.make(Server, alias="L", api_url="http://a:1", username="u", password="p")

    client.patch("/api/v1/servers/L", {"auth": None}, format="json")

    server = Server.objects.get()
    assert (server.username, server.password) == ("", "")


def test_rename_keeps_the_jobs_attached(client, server):
    job = baker.make(Job, server=server, target_server_alias="Laptop", generation_params={"a": 1})

    response = client.patch("/api/v1/servers/Laptop", {"alias": "Desktop"}, format="json")

    assert response.status_code == 200
    job.refresh_from_db()
    assert job.server is not None
    assert job.server.alias == "Desktop"
    assert client.get("/api/v1/servers/Laptop").status_code == 404


def test_invalid_update_changes_nothing(client, server):
    before = db_snapshot()

    response = client.patch("/api/v1/servers/Laptop", {"api_url": "gopher://x"}, format="json")

    assert_error(response, 400, "invalid_url")
    assert db_snapshot() == before


def test_delete_idle_server(client, server):
    baker.make(
        Job,
        server=server,
        target_server_alias="Laptop",
        status=JobStatus.COMPLETED,
        generation_params={"a": 1},
    )
    client.patch("/api/v1/servers/Laptop", {"alias": "Renamed"}, format="json")

    response = client.delete("/api/v1/servers/Renamed")

    assert response.status_code == 200
    assert response.json() == {"message": "Server configuration deleted successfully."}
    assert not Server.objects.exists()
    # Finished jobs stay, still naming the server they ran on, by its last name.
    assert Job.objects.get().server_alias == "Renamed"


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.PROCESSING])
def test_delete_server_with_active_jobs_is_refused(client, server, status):
    baker.make(Job, server=server, status=status, generation_params={"a": 1})
    before = db_snapshot()

    response = client.delete("/api/v1/servers/Laptop")

    error = assert_error(response, 409, "server_has_active_jobs")
    assert "1 pending or processing" in error["message"]
    assert db_snapshot() == before


def test_models_dir_is_set_and_shown(client, db, tmp_path):
    created = client.post(
        "/api/v1/servers",
        {"alias": "L", "api_url": "http://a:1", "models_dir": str(tmp_path)},
        format="json",
    )

    assert created.status_code == 201
    assert created.json()["server"]["models_dir"] == str(tmp_path)
    assert Server.objects.get().models_dir == str(tmp_path)


def test_relative_models_dir_is_refused(client, db):
    response = client.post(
        "/api/v1/servers",
        {"alias": "L", "api_url": "http://a:1", "models_dir": "models"},
        format="json",
    )

    assert "models_dir" in assert_error(response, 400, "models_dir_not_allowed")["fields"]
