"""The admin in a real browser: Debian's headless Chromium driven by Playwright, against
a live server of the test database served as in production, over ASGI (uvicorn, in a thread
of the test process; the dashboard follows the event stream, which a WSGI server cannot
serve), with an in-process Forge simulator running the jobs.

The browser is the system's (`make pytest` installs Debian's `chromium` package first);
Playwright never downloads one. Every test runs at phone (360 px) and desktop widths and
saves screenshots to test-artifacts/screenshots/<viewport>-<page>.png.
"""

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from model_bakery import baker
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from core_app.scopes import local_user
from dashboard_app import selectors as dashboard_selectors
from events_app.stream import events_hub_stop
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from integrations.ntfy.simulator import NtfySimulator
from notifications_app.models import PushTarget, WebhookAttempt
from notifications_app.push_services import push_target_create
from notifications_app.webhook_services import webhook_endpoint_create, webhook_endpoint_test
from queue_app.engine import server_run
from queue_app.models import Job, JobStatus
from queue_app.services import job_cancel, job_submit
from servers_app.models import Server
from servers_app.services import server_check_health
from tests.integration.procs import free_port, wait_until
from tests.support import run_queue_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {
    "phone": {"width": 360, "height": 740},
    "desktop": {"width": 1280, "height": 800},
}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "a-long-operator-password"
CHECKPOINT = "Pony/cyberrealisticPony_v8.safetensors"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make pytest` installs Debian's chromium package.")
    # Playwright's sync API keeps an event loop running in this thread; Django refuses ORM
    # calls next to a running loop unless told that this is deliberate (tests only).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            yield chromium
            chromium.close()


@pytest.fixture(scope="module")
def asgi_server(django_db_blocker) -> Iterator[SimpleNamespace]:
    """A live server like pytest-django's `live_server`, but serving the application as
    the Procfile's web process does: mobilesd.asgi under uvicorn, in a thread of this
    process, so that it reads the test database as the tests write it."""
    import uvicorn

    from mobilesd.asgi import application

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            application, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
    )

    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()
        await events_hub_stop()  # its database connection closed before the test database goes

    thread = threading.Thread(
        target=asyncio.run, args=(serve(),), name="asgi-live-server", daemon=True
    )
    with django_db_blocker.unblock():
        thread.start()
        wait_until(lambda: server.started, timeout=30, what="the ASGI live server")
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", loop=loops[0])
        server.should_exit = True
        thread.join(15)


@pytest.fixture(autouse=True)
def _fresh_event_hub(asgi_server) -> Iterator[None]:
    """After each test, the server's event hub is stopped (the next stream starts another):
    each test empties the tables, the event log's ids start again from 1, and a hub that
    had handed out id 500 would wait for an id above it."""
    yield
    asyncio.run_coroutine_threadsafe(events_hub_stop(), asgi_server.loop).result(15)


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch) -> None:
    """The pages ask for the state every 0.5 s instead of 2 s (the server sets the pace):
    the same code path, a shorter wait."""
    monkeypatch.setattr(dashboard_selectors, "POLL_MILLISECONDS", 500)


@pytest.fixture(scope="module", params=list(VIEWPORTS), ids=list(VIEWPORTS))
def viewport(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def browser_context(browser, asgi_server, viewport) -> Iterator[BrowserContext]:
    """One context per viewport, so the admin's static files are fetched once."""
    context = browser.new_context(
        viewport=VIEWPORTS[viewport], base_url=asgi_server.url, device_scale_factor=1
    )
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def page(browser_context) -> Iterator[Page]:
    browser_context.clear_cookies()
    page = browser_context.new_page()
    yield page
    page.close()


@pytest.fixture
def shoot(page, viewport, request):
    """shoot("dashboard") saves test-artifacts/screenshots/<viewport>-dashboard.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        # Thumbnails load lazily: wait for the ones in view, they are what a person sees.
        page.wait_for_function(
            "[...document.images].every("
            "(img) => img.complete || img.getBoundingClientRect().top > window.innerHeight)"
        )
        path = SCREENSHOTS / f"{viewport}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(models=[SimModel(CHECKPOINT)], seconds_per_step=0)
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def server(sim, settings) -> Server:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.1
    server = baker.make(Server, alias="Laptop", api_url=sim.url)
    server_check_health(server=server)
    server.refresh_from_db()
    return server


@pytest.fixture
def operator(transactional_db, settings) -> str:
    # A fast hasher: the login is what is tested here, not the password's strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
    return "operator"


@pytest.fixture
def login_form(page, operator) -> Page:
    """Logged in through the admin's login form."""
    page.goto("/admin/")
    page.fill("#id_username", operator)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#msd-dashboard")
    return page


@pytest.fixture
def logged_in(page, operator, asgi_server) -> Page:
    """Logged in by a session cookie (the login form itself is tested once per viewport)."""
    client = Client()
    client.force_login(get_user_model().objects.get(username=operator))
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": asgi_server.url}])
    return page


def submit(prompt: str, **params) -> Job:
    params.setdefault("steps", 4)
    job, _ = job_submit(
        owner=local_user(),
        target_server_alias="Laptop",
        generation_params={
            "positive_prompt": prompt,
            "checkpoint_name": CHECKPOINT,
            "width": 64,
            "height": 64,
            **params,
        },
    )
    return job


@pytest.fixture
def finished_job(server) -> Job:
    """A job run to completion, so the gallery has an image."""
    job = submit("a lighthouse at dusk, oil painting", seed=1234)
    server_run(server.pk)
    job.refresh_from_db()
    return job


@pytest.fixture
def ntfy(settings) -> Iterator[NtfySimulator]:
    """A local ntfy-compatible receiver MobileSD may send to (loopback allowed)."""
    import ipaddress

    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    receiver = NtfySimulator().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def push_target(ntfy) -> PushTarget:
    return push_target_create(
        owner=local_user(),
        name="Operator's phone",
        url=f"{ntfy.apprise_url('phone')}?auth=token&token=tk_s3cr3t",
        events=["job.completed", "job.failed"],
    )


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def too_wide(page: Page) -> list[str]:
    """The elements that reach past the window's right edge (for the failure message)."""
    return page.evaluate(
        """() => [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
            .slice(0, 8)
            .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${[...e.classList].join(".")}`
                        + ` right=${Math.round(e.getBoundingClientRect().right)}`)"""
    )


# --- the tests ------------------------------------------------------------------------------


def percent_of(page: Page, job: Job) -> int | None:
    """The progress the dashboard shows for `job` now, or None if it shows none."""
    value = page.evaluate(
        "(id) => { const bar = document.querySelector(`[data-msd-job='${id}'] [data-msd-percent]`);"
        " return bar ? Number(bar.dataset.msdPercent) : null; }",
        str(job.pk),
    )
    return None if value is None else int(value)


def test_dashboard_shows_server_state_and_progress_moving_without_reload(
    server, sim, finished_job, login_form, shoot
):
    page = login_form
    card = page.locator(f"[data-server-id='{server.pk}']")
    expect(card.locator("[data-msd-server-state]")).to_have_text("online")
    expect(card.locator("[data-msd-field=checkpoint] dd")).to_contain_text("cyberrealisticPony_v8")
    expect(card).to_contain_text("No job running.")
    expect(page.locator("[data-msd-images] img")).to_have_count(1)
    shoot("dashboard-idle")
    page.evaluate("window.msdNotReloaded = true")

    sim.config.seconds_per_step = 0.05
    job = submit("a slow red fox in the snow", steps=300)
    thread = run_queue_in_thread(server.pk)
    first = wait_until(lambda: percent_of(page, job), timeout=15, what="progress shown")
    moved = wait_until(
        lambda: (p := percent_of(page, job)) is not None and p != first and p, timeout=15
    )
    shoot("dashboard-running")

    assert 0 < first < moved < 100
    expect(card).to_contain_text("a slow red fox")
    expect(page.locator("[data-msd-count=processing] strong")).to_have_text("1")
    assert page.evaluate("window.msdNotReloaded") is True  # the same page, updated in place
    assert int(page.get_attribute("#msd-dashboard", "data-msd-updates") or 0) >= 2
    job_cancel(job_id=job.pk, owner=None)  # the worker stops the server's task
    thread.join(15)


def test_cancelling_a_running_job_from_its_page_interrupts_the_server(
    logged_in, server, sim, shoot
):
    page = logged_in
    sim.config.seconds_per_step = 0.05
    job = submit("a job the operator stops", steps=300)
    thread = run_queue_in_thread(server.pk)
    sim.wait_for_event("txt2img_started", timeout=10)
    wait_until(lambda: Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING, timeout=10)

    page.goto(f"/admin/queue_app/job/{job.pk}/change/")
    expect(page.locator(".field-status_badge .msd-badge")).to_have_text("processing")
    shoot("job-processing")
    page.click("[data-msd-action=cancel]")

    expect(page.locator(".messagelist")).to_contain_text("Job cancelled.")
    expect(page.locator(".field-status_badge .msd-badge")).to_have_text("cancelled")
    interrupt = sim.wait_for_event("interrupt", timeout=10)
    thread.join(15)
    shoot("job-cancelled")
    assert interrupt["task_id"] == str(job.pk)
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_job_list_progress_moves_without_reload(logged_in, server, sim):
    page = logged_in
    sim.config.seconds_per_step = 0.05
    job = submit("a job watched in the list", steps=300)
    thread = run_queue_in_thread(server.pk)
    wait_until(lambda: (Job.objects.get(pk=job.pk).progress or {}).get("fraction"), timeout=10)

    page.goto("/admin/queue_app/job/")
    page.evaluate("window.msdNotReloaded = true")
    bar = page.locator(f"[data-msd-job-progress='{job.pk}'] .msd-pct")
    first = bar.inner_text()
    expect(bar).not_to_have_text(first, timeout=10_000)

    assert page.evaluate("window.msdNotReloaded") is True
    job_cancel(job_id=job.pk, owner=None)
    thread.join(15)


def test_the_lists_fit_the_screen(logged_in, server, finished_job, push_target, viewport, shoot):
    page = logged_in
    submit("a queued job with a rather long prompt " * 4)
    for name, url in (
        ("jobs", "/admin/queue_app/job/"),
        ("servers", "/admin/servers_app/server/"),
        ("gallery", "/admin/gallery/"),
        ("push-targets", "/admin/notifications_app/pushtarget/"),
        ("push-notifications", "/admin/notifications_app/pushmessage/"),
    ):
        page.goto(url)
        shoot(name)
        assert no_horizontal_scroll(page), f"{name} scrolls sideways: {too_wide(page)}"
    page.goto("/admin/queue_app/job/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    expect(page.locator("#result_list .msd-badge").first).to_be_visible()


def test_the_webhook_pages_fit_the_screen(logged_in, viewport, shoot, settings):
    """The endpoints, their deliveries and a delivery's tries, on a phone too."""
    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("192.168.0.0/16"),)
    endpoint = webhook_endpoint_create(
        owner=local_user(),
        is_admin=True,
        url="http://192.168.1.20:8123/api/webhook/a-rather-long-home-assistant-webhook-id",
        event_types=["job.completed", "job.failed", "batch."],
        description="Home Assistant",
    )
    delivery = webhook_endpoint_test(endpoint=endpoint)
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        status_code=503,
        duration_ms=42,
        error="",
        response_body="Service Unavailable " * 10,
    )
    page = logged_in
    for name, url in (
        ("webhooks", "/admin/notifications_app/webhookendpoint/"),
        ("webhook", f"/admin/notifications_app/webhookendpoint/{endpoint.pk}/change/"),
        ("deliveries", "/admin/notifications_app/webhookdelivery/"),
        ("delivery", f"/admin/notifications_app/webhookdelivery/{delivery.pk}/change/"),
    ):
        page.goto(url)
        shoot(name)
        assert no_horizontal_scroll(page), f"{name} scrolls sideways: {too_wide(page)}"
    expect(page.locator("[data-msd-action=redeliver]")).to_be_visible()


def test_server_page_tests_the_connection(logged_in, server, shoot):
    page = logged_in
    page.goto(f"/admin/servers_app/server/{server.pk}/change/")
    page.click("[data-msd-action=check]")

    expect(page.locator(".messagelist")).to_contain_text("Laptop answered: online")
    expect(page.locator(".field-cached_models_list")).to_contain_text("cyberrealisticPony_v8")
    shoot("server")
    assert no_horizontal_scroll(page), too_wide(page)


def test_push_target_page_sends_a_test_notification(logged_in, ntfy, push_target, shoot):
    page = logged_in
    page.goto(f"/admin/notifications_app/pushtarget/{push_target.pk}/change/")
    expect(page.locator(".field-url_display")).to_contain_text("ntfy://t...t@127.0.0.1")
    assert "tk_s3cr3t" not in page.content()
    page.click("[data-msd-action=test]")

    expect(page.locator(".messagelist")).to_contain_text("A test notification was sent")
    (received,) = ntfy.messages("phone")
    assert received.title == "MobileSD test notification"
    shoot("push-target")
    assert no_horizontal_scroll(page), too_wide(page)


def test_gallery_opens_an_image_with_its_parameters(logged_in, server, finished_job, shoot):
    page = logged_in
    page.goto("/admin/gallery/")
    expect(page.locator(".msd-card")).to_have_count(1)
    page.click(".msd-card a")

    page.wait_for_function(
        "() => { const img = document.querySelector('.msd-image-large img');"
        " return img !== null && img.complete && img.naturalWidth > 0; }"
    )  # null until the click's navigation has landed on the image's page
    expect(page.locator(".msd-params")).to_contain_text("1234")  # the seed
    expect(page.locator(".msd-params")).to_contain_text("a lighthouse at dusk")
    shoot("gallery-image")
    assert no_horizontal_scroll(page), too_wide(page)


def test_dashboard_follows_the_event_stream_without_polling(
    server, sim, logged_in, monkeypatch, shoot
):
    # A poll every 10 minutes: what the page shows within the test came with the stream.
    monkeypatch.setattr(dashboard_selectors, "POLL_MILLISECONDS", 600_000)
    monkeypatch.setattr(dashboard_selectors, "STREAM_REFRESH_MILLISECONDS", 600_000)
    page = logged_in
    page.goto("/admin/")
    expect(page.locator("#msd-dashboard")).to_have_attribute("data-msd-mode", "stream")
    # The read the stream's opening asks for (what changed before it opened), then no more.
    expect(page.locator("#msd-dashboard")).to_have_attribute("data-msd-updates", "1")
    expect(page.locator("[data-msd-count=pending] strong")).to_have_text("0")
    updates = 1

    sim.config.seconds_per_step = 0.05
    job = submit("a heron at dawn, followed live", steps=300)
    expect(page.locator("[data-msd-count=pending] strong")).to_have_text("1")
    thread = run_queue_in_thread(server.pk)
    card = page.locator(f"[data-server-id='{server.pk}']")
    expect(card).to_contain_text("a heron at dawn")
    expect(page.locator("[data-msd-count=processing] strong")).to_have_text("1")
    first = wait_until(lambda: percent_of(page, job), timeout=15, what="progress shown")
    wait_until(lambda: (p := percent_of(page, job)) is not None and p > first, timeout=15)
    shoot("dashboard-stream")

    job_cancel(job_id=job.pk, owner=None)
    expect(page.locator("[data-msd-count=cancelled] strong")).to_have_text("1")
    expect(card).to_contain_text("No job running.")
    thread.join(15)
    assert page.get_attribute("#msd-dashboard", "data-msd-mode") == "stream"
    assert int(page.get_attribute("#msd-dashboard", "data-msd-events") or 0) >= 4
    # Fewer state reads than events: bursts were folded into one read.
    reads = int(page.get_attribute("#msd-dashboard", "data-msd-updates") or 0) - updates
    assert 0 < reads <= int(page.get_attribute("#msd-dashboard", "data-msd-events") or 0)


def test_dashboard_polls_when_the_stream_is_refused(server, logged_in, monkeypatch):
    monkeypatch.setattr(dashboard_selectors, "events_stream_url", lambda: "/api/v1/no-stream")
    page = logged_in
    page.goto("/admin/")
    expect(page.locator("[data-msd-count=pending] strong")).to_have_text("0")

    submit("a job seen by polling")
    expect(page.locator("[data-msd-count=pending] strong")).to_have_text("1")
    assert page.get_attribute("#msd-dashboard", "data-msd-mode") == "poll"
    assert page.get_attribute("#msd-dashboard", "data-msd-events") == "0"
