"""The queue control buttons of the admin: pause/resume the queue on the dashboard, a
server on its page, move a job on its page."""

from django.urls import reverse

from queue_app.models import Job, JobStatus, QueueState
from servers_app.models import Server
from tests.admin_support import make_job, messages_of, press


def test_the_dashboard_pauses_and_resumes_the_queue(admin_client, db):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Pause the queue" in page

    paused = admin_client.post(reverse("admin:dashboard_queue_switch", args=["pause"]), follow=True)

    assert QueueState.objects.get().paused_at is not None
    assert messages_of(paused) == ["Queue paused: running jobs finish, no new job starts."]
    page = paused.content.decode()
    assert "Paused since" in page
    assert "Resume the queue" in page

    admin_client.post(reverse("admin:dashboard_queue_switch", args=["resume"]))
    assert QueueState.objects.get().paused_at is None


def test_the_dashboards_switch_takes_only_a_post_and_known_switches(admin_client, db):
    assert (
        admin_client.get(reverse("admin:dashboard_queue_switch", args=["pause"])).status_code == 405
    )
    assert (
        admin_client.post(reverse("admin:dashboard_queue_switch", args=["stop"])).status_code == 404
    )
    assert not QueueState.objects.exists()


def test_the_dashboard_cancels_the_waiting_jobs_but_not_the_running_ones(admin_client, server):
    desktop = Server.objects.create(alias="Desktop", api_url="http://127.0.0.1:7861")
    laptop_waiting, desktop_waiting = make_job(server), make_job(desktop)
    running = make_job(server, JobStatus.PROCESSING)
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Cancel waiting jobs" in page
    assert '<option value="Desktop">Desktop</option>' in page
    url = reverse("admin:dashboard_queue_cancel_waiting")

    one = admin_client.post(url, {"server": "Laptop"}, follow=True)

    assert messages_of(one) == ["Cancelled 1 waiting job(s) of Laptop."]
    assert statuses(laptop_waiting, desktop_waiting, running) == [
        "cancelled",
        "pending",
        "processing",
    ]
    every = admin_client.post(url, {"server": ""}, follow=True)
    assert messages_of(every) == ["Cancelled 1 waiting job(s)."]
    assert statuses(desktop_waiting, running) == ["cancelled", "processing"]
    unknown = admin_client.post(url, {"server": "Nope"}, follow=True)
    assert messages_of(unknown) == ["Server 'Nope' not found."]
    assert admin_client.get(url).status_code == 405


def statuses(*jobs) -> list[str]:
    return [Job.objects.get(pk=job.pk).status for job in jobs]


def test_the_server_page_pauses_and_resumes_the_server(admin_client, server):
    url = reverse("admin:servers_app_server_change", args=[server.pk])
    assert 'data-msd-action="pause"' in admin_client.get(url).content.decode()

    response = press(admin_client, "servers_app_server_pause", server)

    server.refresh_from_db()
    assert server.paused_at is not None
    assert messages_of(response) == ["Laptop paused: its running job finishes, no new one starts."]
    page = admin_client.get(url).content.decode()
    assert 'data-msd-action="resume"' in page
    assert 'data-msd-action="pause"' not in page

    press(admin_client, "servers_app_server_resume", server)
    assert Server.objects.get(pk=server.pk).paused_at is None


def test_the_job_page_moves_a_pending_job(admin_client, server):
    job = make_job(server)
    make_job(server, priority=4)
    url = reverse("admin:queue_app_job_change", args=[job.pk])
    assert 'data-msd-action="move-top"' in admin_client.get(url).content.decode()

    response = press(admin_client, "queue_app_job_move_top", job)

    job.refresh_from_db()
    assert job.priority == 5
    assert messages_of(response) == ["Job moved to the top (priority 5)."]
    press(admin_client, "queue_app_job_move_bottom", job)
    job.refresh_from_db()
    assert job.priority == 3


def test_the_job_page_offers_no_move_for_a_running_job(admin_client, server):
    job = make_job(server, JobStatus.PROCESSING)
    page = admin_client.get(reverse("admin:queue_app_job_change", args=[job.pk])).content.decode()

    assert 'data-msd-action="move-top"' not in page
