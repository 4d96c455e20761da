"""The job and server pages of the admin: their buttons call the services."""

from collections.abc import Iterator

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app.engine import server_run
from queue_app.models import ANY_SERVER, Job, JobImage, JobStatus
from queue_app.services import job_run_again
from servers_app.models import Server
from servers_app.services import server_check_health

PARAMS = {"positive_prompt": "a lighthouse at dusk", "steps": 5, "seed": 1234, "width": 64}


def make_job(server, status=JobStatus.PENDING, **fields) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias=server.alias if server else ANY_SERVER,
        status=status,
        generation_params=dict(PARAMS),
        **fields,
    )


def job_page(admin_client, job):
    return admin_client.get(reverse("admin:queue_app_job_change", args=[job.pk]))


def press(admin_client, name, obj, **kwargs):
    """POST one of the page's buttons (they are forms) and follow the redirect."""
    return admin_client.post(reverse(f"admin:{name}", args=[obj.pk]), follow=True, **kwargs)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- the job page ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "buttons"),
    [
        (JobStatus.PENDING, {"cancel", "run-again"}),
        (JobStatus.PROCESSING, {"cancel", "run-again"}),
        (JobStatus.COMPLETED, {"run-again"}),
        (JobStatus.FAILED, {"retry", "run-again"}),
        (JobStatus.CANCELLED, {"retry", "run-again"}),
    ],
)
def test_job_page_offers_the_buttons_its_status_allows(admin_client, server, status, buttons):
    page = job_page(admin_client, make_job(server, status)).content.decode()

    shown = {
        name for name in ("cancel", "retry", "run-again") if f'data-msd-action="{name}"' in page
    }
    assert shown == buttons
    assert 'name="_save"' not in page  # nothing on a job is edited by hand


def test_job_page_shows_every_image_large_with_parameters_info_and_error(admin_client, server):
    job = make_job(
        server,
        JobStatus.FAILED,
        result_details={"error": "CUDA out of memory", "generation_info": {"seed": 1234}},
    )
    for index in range(2):
        image = JobImage(job=job, index=index, seed=1234 + index, width=64, height=64)
        image.file.save(f"x{index}.png", ContentFile(b"png"), save=True)

    page = job_page(admin_client, job).content.decode()

    for index in range(2):
        assert reverse("job-image-thumbnail", args=[job.pk, index]) + "?size=1024" in page
        assert reverse("admin:gallery_image", args=[job.pk, index]) in page
    assert "CUDA out of memory" in page
    assert "a lighthouse at dusk" in page  # the parameters
    assert "&quot;seed&quot;: 1234" in page  # the generation info


def test_cancel_button_cancels_the_job(admin_client, server):
    job = make_job(server, JobStatus.PENDING)

    response = press(admin_client, "queue_app_job_cancel", job)

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert messages_of(response) == ["Job cancelled."]


def test_cancel_button_on_a_finished_job_says_why_not(admin_client, server):
    job = make_job(server, JobStatus.COMPLETED)

    response = press(admin_client, "queue_app_job_cancel", job)

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert "cannot be cancelled" in messages_of(response)[0]


def test_buttons_accept_only_post(admin_client, server):
    job = make_job(server)

    response = admin_client.get(reverse("admin:queue_app_job_cancel", args=[job.pk]))

    assert response.status_code == 405
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def test_buttons_need_a_staff_login(anon_client, server):
    job = make_job(server)

    anon_client.post(reverse("admin:queue_app_job_cancel", args=[job.pk]))

    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def test_retry_button_requeues_a_failed_job_as_a_new_attempt(admin_client, server):
    job = make_job(server, JobStatus.FAILED, result_details={"error": "boom"})

    response = press(admin_client, "queue_app_job_retry", job)

    job.refresh_from_db()
    assert (job.status, job.retry_count, job.result_details) == (JobStatus.PENDING, 1, None)
    assert messages_of(response) == ["Job queued again."]


def test_run_again_button_queues_a_copy_with_a_new_seed(
    admin_client, server, django_capture_on_commit_callbacks, published
):
    job = make_job(server, JobStatus.COMPLETED, priority=3)

    with django_capture_on_commit_callbacks(execute=True):
        response = press(admin_client, "queue_app_job_run_again", job)

    new = Job.objects.exclude(pk=job.pk).get()
    assert new.generation_params == {**PARAMS, "seed": ""}
    assert (new.status, new.server, new.priority) == (JobStatus.PENDING, server, 3)
    assert response.redirect_chain[-1][0] == reverse("admin:queue_app_job_change", args=[new.pk])
    assert ("queue_app.tasks.run_server", (server.pk,), {}) in published
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED


def test_run_again_keeps_a_job_for_any_server_for_any_server(db):
    job = make_job(None, JobStatus.COMPLETED)

    new = job_run_again(job_id=job.pk)

    assert (new.target_server_alias, new.server) == (ANY_SERVER, None)


def test_run_again_of_a_job_whose_server_is_gone_says_so(admin_client, server):
    job = make_job(server, JobStatus.COMPLETED)
    Job.objects.filter(pk=job.pk).update(server=None, target_server_alias="Gone")

    response = press(admin_client, "queue_app_job_run_again", job)

    assert Job.objects.count() == 1
    assert "Server 'Gone' not found." in messages_of(response)


def test_run_again_action_queues_one_copy_per_selected_job(admin_client, server):
    jobs = [make_job(server, JobStatus.COMPLETED) for _ in range(2)]

    admin_client.post(
        reverse("admin:queue_app_job_changelist"),
        {"action": "run_again", "_selected_action": [job.pk for job in jobs]},
    )

    assert Job.objects.filter(status=JobStatus.PENDING).count() == 2


def test_job_list_shows_badges_progress_prompt_server_and_age(admin_client, server):
    make_job(server, JobStatus.PROCESSING, progress={"fraction": 0.37})

    page = admin_client.get(reverse("admin:queue_app_job_changelist")).content.decode()

    assert 'class="msd-badge msd-processing"' in page
    assert '<progress value="37" max="100"></progress>' in page
    assert "a lighthouse at dusk" in page
    assert "Laptop" in page
    assert "just now" in page


# --- the server page ------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(models=[SimModel("Pony/cyberrealisticPony_v8.safetensors")])
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def live(sim, db) -> Server:
    return baker.make(Server, alias="Laptop", api_url=sim.url)


def test_test_connection_shows_what_the_server_answered(admin_client, live):
    response = press(admin_client, "servers_app_server_check", live)

    live.refresh_from_db()
    assert live.is_online is True
    assert messages_of(response) == [
        f"Laptop answered: online, Forge, {live.loaded_checkpoint} loaded."
    ]
    assert "cyberrealisticPony_v8" in live.loaded_checkpoint


def test_test_connection_shows_why_a_server_did_not_answer(admin_client, live, sim):
    sim.faults.refuse_connections = True

    response = press(admin_client, "servers_app_server_check", live)

    live.refresh_from_db()
    assert live.is_online is False
    assert messages_of(response)[0].startswith("Laptop did not answer as expected: ")


def test_refresh_models_lists_the_servers_models_on_its_page(admin_client, live):
    response = press(admin_client, "servers_app_server_refresh_models", live)

    assert messages_of(response)[0].startswith("Laptop: 1 checkpoints, ")
    page = response.content.decode()
    assert "Checkpoints (1)" in page
    assert "cyberrealisticPony_v8" in page


def test_a_disabled_server_keeps_its_jobs_pending(admin_client, live):
    server_check_health(server=live)
    job = make_job(live, JobStatus.PENDING)

    press(admin_client, "servers_app_server_disable", live)

    live.refresh_from_db()
    assert live.enabled is False
    assert server_run(live.pk) == 0
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def test_enabling_a_server_checks_it_which_runs_its_queue(
    admin_client, live, django_capture_on_commit_callbacks, published
):
    Server.objects.filter(pk=live.pk).update(enabled=False)

    with django_capture_on_commit_callbacks(execute=True):
        response = press(admin_client, "servers_app_server_enable", live)

    live.refresh_from_db()
    assert live.enabled is True
    assert ("queue_app.tasks.check_server", (live.pk,), {}) in published
    assert messages_of(response) == ["Laptop enabled."]


def test_server_page_offers_enable_or_disable_as_it_stands(admin_client, live):
    url = reverse("admin:servers_app_server_change", args=[live.pk])

    enabled_page = admin_client.get(url).content.decode()
    Server.objects.filter(pk=live.pk).update(enabled=False)
    disabled_page = admin_client.get(url).content.decode()

    assert 'data-msd-action="disable"' in enabled_page
    assert 'data-msd-action="enable"' not in enabled_page
    assert 'data-msd-action="enable"' in disabled_page


def test_server_list_shows_state_and_queue(admin_client, live):
    Server.objects.filter(pk=live.pk).update(is_online=True, loaded_checkpoint="juggernautXL")
    make_job(live, JobStatus.PENDING)
    make_job(live, JobStatus.PENDING)
    make_job(live, JobStatus.PROCESSING)
    make_job(live, JobStatus.COMPLETED)

    response = admin_client.get(reverse("admin:servers_app_server_changelist"))

    row = response.context["cl"].result_list[0]
    assert (row.pending_count, row.running_count) == (2, 1)
    page = response.content.decode()
    assert 'class="msd-badge msd-online"' in page
    assert "juggernautXL" in page
