"""The dashboard's AdminSite: the admin index as the operator's dashboard, its JSON status,
and the gallery."""

import json
import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from model_bakery import baker

from core_app.services import worker_heartbeat_record
from dashboard_app.selectors import dashboard_status
from dashboard_app.sites import GALLERY_PAGE_SIZE, DashboardSite
from queue_app.models import Job, JobImage, JobStatus
from servers_app.models import Server

STATUS_URL = "/admin/dashboard/status"


def make_job(server, status=JobStatus.PENDING, prompt="a lighthouse", **fields) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias=server.alias if server else "any",
        status=status,
        generation_params={"positive_prompt": prompt, "steps": 20},
        **fields,
    )


def finished(server, prompt="a lighthouse", checkpoint="juggernautXL", images=1) -> Job:
    job = make_job(
        server,
        JobStatus.COMPLETED,
        prompt,
        completed_at=timezone.now(),
        result_details={"generation_info": {"sd_model_name": checkpoint}},
    )
    for index in range(images):
        image = JobImage(job=job, index=index, seed=100 + index, width=64, height=64)
        image.file.save(f"{job.pk.hex[:8]}_{index}.png", ContentFile(b"png"), save=True)
    return job


@pytest.fixture
def desktop(server) -> Server:
    return baker.make(
        Server,
        alias="Desktop",
        api_url="http://127.0.0.1:7861",
        is_online=False,
        last_error="cannot connect",
    )


def test_the_dashboard_site_is_the_admin_site_every_app_registers_with():
    assert isinstance(admin.site, DashboardSite)
    assert isinstance(admin.site._registry[Job].admin_site, DashboardSite)
    assert isinstance(admin.site._registry[Server].admin_site, DashboardSite)


def test_the_pages_carry_the_sites_titles_and_no_sidebar(admin_client, db):
    context = admin_client.get("/admin/").context

    assert (context["site_header"], context["site_title"]) == ("MobileSD", "MobileSD")
    assert context["title"] == "Operator dashboard"
    assert context["is_nav_sidebar_enabled"] is False
    assert context["site_url"] is None


def test_the_generic_bulk_delete_is_off(admin_client, db):
    assert "delete_selected" not in dict(admin.site.actions)


def test_index_requires_a_staff_login(anon_client):
    response = anon_client.get("/admin/")

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_index_embeds_the_dashboard_state_and_keeps_the_model_list(admin_client, server):
    make_job(server, JobStatus.PENDING)

    response = admin_client.get("/admin/")

    assert response.status_code == 200
    state = response.context["dashboard"]
    assert [s["alias"] for s in state["servers"]] == ["Laptop"]
    assert 'id="msd-dashboard-data"' in response.content.decode()
    assert response.context["app_list"]  # the admin's list of models is still there
    assert 'data-status-url="/admin/dashboard/status"' in response.content.decode()


def test_index_says_when_no_worker_or_beat_runs(admin_client, no_heartbeats):
    page = admin_client.get("/admin/").content.decode()

    problems = re.findall(r'<p class="errornote" data-msd-problem>(.*?)</p>', page)
    assert problems == [
        "Workers: no worker has ever been seen: start one (celery -A mobilesd worker)",
        "Beat: beat has never been seen: start exactly one (celery -A mobilesd beat)",
    ]


def test_index_says_nothing_while_workers_and_beat_run(admin_client, worker_seen):
    page = admin_client.get("/admin/").content.decode()

    assert "data-msd-problem" not in page


def test_index_says_when_the_running_workers_have_too_few_threads_for_the_servers(
    admin_client, worker_seen
):
    worker_heartbeat_record(hostname="celery@gpu-box", started=True, threads=3)
    baker.make(Server, enabled=True, api_url="http://127.0.0.1:9", _quantity=2)

    page = admin_client.get("/admin/").content.decode()

    problems = re.findall(r'<p class="errornote" data-msd-problem>(.*?)</p>', page)
    assert len(problems) == 1
    assert problems[0].startswith(
        "Workers: The workers running have 3 threads for 2 enabled servers"
    )
    assert "Set WORKER_CONCURRENCY to at least 4" in problems[0]

    worker_heartbeat_record(hostname="celery@laptop", started=True, threads=1)

    assert "data-msd-problem" not in admin_client.get("/admin/").content.decode()


def test_status_is_refused_without_a_staff_session(anon_client, django_user_model):
    assert anon_client.get(STATUS_URL).status_code == 403
    user = django_user_model.objects.create_user("phone-user", password="x-long-password")
    anon_client.force_login(user)

    response = anon_client.get(STATUS_URL)

    assert response.status_code == 403
    assert response.json()["code"] == "not_authenticated"


def test_status_reports_servers_with_running_jobs_and_queue_depth(admin_client, server, desktop):
    Server.objects.filter(pk=server.pk).update(
        is_online=True, loaded_checkpoint="sdxl\\juggernaut.safetensors"
    )
    running = make_job(
        server,
        JobStatus.PROCESSING,
        "a red fox",
        started_at=timezone.now(),
        progress={"fraction": 0.42, "step": 8, "total_steps": 20, "eta_seconds": 3.5},
    )
    make_job(server, JobStatus.PENDING)
    make_job(server, JobStatus.PENDING)
    make_job(desktop, JobStatus.PENDING)

    data = admin_client.get(STATUS_URL).json()

    laptop, other = sorted(data["servers"], key=lambda s: s["alias"] != "Laptop")
    assert laptop["state"] == "online"
    assert laptop["loaded_checkpoint"] == "sdxl\\juggernaut.safetensors"
    assert laptop["queue_depth"] == 2
    assert [(j["id"], j["percent"], j["step"]) for j in laptop["running"]] == [
        (str(running.pk), 42, 8)
    ]
    assert laptop["running"][0]["url"] == reverse("admin:queue_app_job_change", args=[running.pk])
    assert (other["state"], other["queue_depth"], other["running"]) == ("offline", 1, [])
    assert other["last_error"] == "cannot connect"


def test_status_tells_a_disabled_server_and_one_never_checked(admin_client, server):
    never = baker.make(Server, alias="New", api_url="http://127.0.0.1:7862", is_online=None)
    Server.objects.filter(pk=server.pk).update(enabled=False, is_online=True)

    data = admin_client.get(STATUS_URL).json()

    states = {s["alias"]: s["state"] for s in data["servers"]}
    assert states == {"Laptop": "disabled", never.alias: "unknown"}


def test_status_counts_jobs_by_status(admin_client, server):
    for status, count in ((JobStatus.PENDING, 3), (JobStatus.FAILED, 2), (JobStatus.COMPLETED, 1)):
        for _ in range(count):
            make_job(server, status)
    make_job(None, JobStatus.PENDING)  # "any": no server chosen yet

    data = admin_client.get(STATUS_URL).json()

    assert data["counts"] == {
        "pending": 4,
        "processing": 0,
        "completed": 1,
        "failed": 2,
        "cancelled": 0,
    }
    assert data["unassigned_pending"] == 1
    assert data["count_urls"]["failed"].endswith("?status__exact=failed")


def test_status_lists_the_latest_images_newest_first(admin_client, server):
    old = finished(server, "an old one")
    Job.objects.filter(pk=old.pk).update(completed_at=timezone.now() - timedelta(days=1))
    new = finished(server, "a new one", images=2)
    make_job(server, JobStatus.CANCELLED)

    images = admin_client.get(STATUS_URL).json()["latest_images"]

    assert [(i["job_id"], i["index"]) for i in images] == [
        (str(new.pk), 1),
        (str(new.pk), 0),
        (str(old.pk), 0),
    ]
    assert images[0]["thumbnail_url"] == (
        reverse("job-image-thumbnail", args=[new.pk, 1]) + "?size=256"
    )
    assert images[0]["url"] == reverse("admin:gallery_image", args=[new.pk, 1])


def test_status_costs_the_same_few_queries_however_many_rows(
    admin_client, server, desktop, django_assert_max_num_queries, django_assert_num_queries
):
    for index in range(6):
        extra = baker.make(Server, alias=f"Box{index}", api_url=f"http://127.0.0.1:{8000 + index}")
        make_job(extra, JobStatus.PROCESSING, progress={"fraction": 0.5})
        make_job(extra, JobStatus.PENDING)
        finished(extra, images=2)

    with django_assert_num_queries(4):  # servers, running jobs, counts, latest images
        dashboard_status()
    # The view adds the session and the user.
    with django_assert_max_num_queries(6):
        response = admin_client.get(STATUS_URL)
    assert len(response.json()["servers"]) == 8


# --- gallery ------------------------------------------------------------------------------


def gallery(admin_client, **params):
    return admin_client.get(reverse("admin:gallery"), params)


def test_gallery_lists_finished_images_newest_first_by_page(admin_client, server):
    jobs = [finished(server, f"picture {n}") for n in range(GALLERY_PAGE_SIZE + 2)]
    make_job(server, JobStatus.FAILED)

    first = gallery(admin_client)
    second = gallery(admin_client, page=2)

    cards = first.context["cards"]
    assert len(cards) == GALLERY_PAGE_SIZE
    assert cards[0]["image"].job == jobs[-1]
    assert first.context["page"].has_next
    assert not first.context["page"].has_previous
    assert [c["image"].job for c in second.context["cards"]] == [jobs[1], jobs[0]]
    assert second.context["page"].has_previous
    assert not second.context["page"].has_next
    assert "Page 2 · newest first" in second.content.decode()


def test_gallery_filters_by_server_checkpoint_and_prompt(admin_client, server, desktop):
    fox = finished(server, "a red fox", checkpoint="juggernautXL")
    owl = finished(desktop, "a snowy owl", checkpoint="ponyRealism")
    cat = finished(server, "a black cat", checkpoint="ponyRealism")

    def shown(**params):
        return [c["image"].job for c in gallery(admin_client, **params).context["cards"]]

    assert shown(server="Desktop") == [owl]
    assert shown(checkpoint="ponyRealism") == [cat, owl]
    assert shown(q="FOX") == [fox]
    assert shown(server="Laptop", checkpoint="ponyRealism") == [cat]
    assert gallery(admin_client).context["checkpoints"] == ["juggernautXL", "ponyRealism"]


def test_gallery_says_when_nothing_matches(admin_client, server):
    finished(server, "a red fox")

    response = gallery(admin_client, q="submarine")

    assert response.context["cards"] == []
    assert "No images match these filters" in response.content.decode()


def test_image_page_shows_the_image_and_its_parameters(admin_client, server):
    job = finished(server, "a red fox in the snow", images=2)
    JobImage.objects.filter(job=job, index=1).update(infotext="a red fox\nSteps: 20, Seed: 101")

    response = admin_client.get(reverse("admin:gallery_image", args=[job.pk, 1]))

    page = response.content.decode()
    assert response.status_code == 200
    assert reverse("job-image", args=[job.pk, 1]) in page
    assert reverse("job-image-thumbnail", args=[job.pk, 1]) + "?size=1024" in page
    assert "a red fox in the snow" in page
    assert "Steps: 20, Seed: 101" in page
    assert dict(response.context["parameters"])["Steps"] == 20
    assert response.context["older_url"] == reverse("admin:gallery_image", args=[job.pk, 0])
    assert response.context["newer_url"] is None


def test_image_page_of_an_unknown_image_is_404(admin_client, server):
    job = finished(server)

    response = admin_client.get(reverse("admin:gallery_image", args=[job.pk, 7]))

    assert response.status_code == 404


def test_gallery_needs_a_staff_login(anon_client):
    response = anon_client.get(reverse("admin:gallery"))

    assert response.status_code == 302


def test_image_page_keeps_the_gallery_filters_in_its_links(admin_client, server):
    job = finished(server, "a red fox", checkpoint="juggernautXL")

    response = admin_client.get(
        reverse("admin:gallery_image", args=[job.pk, 0]), {"checkpoint": "juggernautXL"}
    )

    assert response.context["gallery_url"] == "/admin/gallery/?checkpoint=juggernautXL"


def test_dashboard_state_is_valid_json_for_the_page(admin_client, server):
    finished(server)
    response = admin_client.get("/admin/")
    found = re.search(
        r'<script id="msd-dashboard-data"[^>]*>(.*?)</script>', response.content.decode(), re.S
    )
    assert found is not None
    embedded = json.loads(found.group(1))

    assert embedded["servers"][0]["alias"] == "Laptop"
    assert len(embedded["latest_images"]) == 1


def test_staff_user_without_superuser_can_read_the_status(anon_client):
    staff = get_user_model().objects.create_user("op", password="x-long-password", is_staff=True)
    anon_client.force_login(staff)

    assert anon_client.get(STATUS_URL).status_code == 200


def test_status_tells_the_page_to_ask_again_in_two_seconds(admin_client, db):
    assert admin_client.get(STATUS_URL).json()["poll_ms"] == 2000


def test_status_tells_the_page_which_stream_to_follow_and_how(admin_client, db):
    stream = admin_client.get(STATUS_URL).json()["stream"]

    assert stream["url"] == "/api/v1/events?types=job.%2Cbatch.%2Cserver.%2Cqueue."
    assert {"job.queued", "job.progress", "job.completed", "server.offline", "reset"} <= set(
        stream["events"]
    )
    assert not any(name.startswith("download.") for name in stream["events"])
    assert stream["debounce_ms"] > 0
    assert stream["open_timeout_ms"] > 0
