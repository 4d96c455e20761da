"""Running claimed jobs on their Forge / A1111 server.

A worker thread runs `server_run` for one server: it claims a job for a free slot, runs it,
and runs the server's next job the moment the previous one's images arrive, until there is
none. Everything else (storing images, completing jobs, choosing and reserving the next
job) happens in helper threads while the server generates. While `txt2img` blocks, a
monitor thread renews the job's lease, writes its progress, and interrupts the server if
the job is cancelled (only when the server's current task is this job's).

A database outage shorter than the lease costs no job anything: the heartbeat and every
bookkeeping step try again on a fresh connection (`core_app.leases`), and a finished
generation is kept (its images on storage, their records in memory) until its completion
is recorded, never generated again.
"""

import contextlib
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from core_app.leases import (
    DATABASE_DOWN,
    LeaseLost,
    drop_broken_connection,
    retry_while_database_down,
)
from core_app.logs import log_context
from integrations.forge.client import (
    ForgeClient,
    ForgeError,
    ForgePermanentError,
    ForgeTransientError,
    ForgeUnreachableError,
    ServerEndpoint,
    Txt2ImgResult,
)
from queue_app import dispatch, metrics
from queue_app.dispatch import Claim, ImageRecord
from queue_app.eta import job_work
from queue_app.extension_checks import ExtensionUnavailable, extensions_resolve
from queue_app.extension_params import apply_extras, sends_modules, vae_setting
from queue_app.images import (
    InvalidImageError,
    delete_image_files,
    orphan_image_files,
    save_image_file,
)
from queue_app.params import (
    build_img2img_payload,
    build_txt2img_payload,
    image_mode,
    loras_sent,
    requested_loras,
)
from queue_app.previews import InvalidPreviewError, PreviewImage, preview_url, preview_webp
from queue_app.timeouts import job_timeout
from queue_app.uploads import InputImages, InputMissing, job_input_images, script_upload_refs
from servers_app.checkpoints import checkpoint_hashes, checkpoint_key, checkpoint_ran_as
from servers_app.models import Server
from servers_app.performance import server_performance_record
from servers_app.quarantine import server_note_job_failure, server_note_job_success
from servers_app.resolver import LoraLike, resolve, resolve_lora
from servers_app.selectors import server_checkpoint_reported, server_checkpoints, server_loras
from servers_app.services import (
    server_mark_offline,
    server_note_loaded_checkpoint,
    server_refresh_models,
    server_remember_vae_baseline,
)

logger = logging.getLogger(__name__)


# The read timeout of a request to a server: any request but a generation's, which waits
# its job's own (`job_timeout`); and a quick one's (a progress probe, an interrupt), which
# answers within moments while a job runs.
READ_TIMEOUT = 30.0
QUICK_READ_TIMEOUT = 5.0


def make_client(server: Server, *, read_timeout: float = READ_TIMEOUT) -> ForgeClient:
    return ForgeClient(
        ServerEndpoint.from_server(server),
        connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
    )


# Set when the worker is asked to stop: the job in flight finishes, no new one is claimed
# (the rest stay pending for the reconcile task or another worker).
shutting_down = threading.Event()


class _Waiting:
    """How many server loops of this process have a server waiting for MobileSD: from the
    loop's start, and from each answer, until the next request is out.

    Each such step costs the one interpreter a few milliseconds of CPU (a start more: a
    connection, the claim), and a burst of them comes at once: a batch for many servers
    starts many loops together, which then finish their jobs together. The servers already
    generating need nothing from MobileSD for a while, so the helper threads' work
    (reserving a next job, storing images), the running jobs' heartbeats and progress
    probes, and the notifications' fan-out (notifications_app.listener) wait until no
    server waits, at most `YIELD_SECONDS`, instead of competing with those steps for the
    interpreter's lock."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting = 0

    def begin(self) -> None:
        with self._changed:
            self._waiting += 1

    def end(self) -> None:
        with self._changed:
            self._waiting -= 1
            if not self._waiting:
                self._changed.notify_all()

    def wait_until_none(self, timeout: float) -> bool:
        """Wait until no server waits, at most `timeout` seconds; True if none does."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._waiting, timeout)


servers_waiting = _Waiting()

# The longest a helper thread's work yields to servers waiting: well under a job's
# duration, so the next job's reservation is still ready when the running one ends.
YIELD_SECONDS = 0.5


@dataclass(frozen=True)
class Generated:
    """A job's answer from the server, with the title of the checkpoint it ran on (None:
    the job named none, and it is looked up from the answer when stored). `note_loaded`:
    that checkpoint is now the server's loaded one, and the database could not be told
    yet (it is, with the completion)."""

    result: Txt2ImgResult
    checkpoint: str | None
    # The LoRA names the request sent (`result_details.loras`).
    loras: tuple[str, ...] = ()
    note_loaded: bool = False
    # The seconds the request took, sending to answer (servers_app.performance), and
    # whether the server loaded the job's checkpoint first.
    run_seconds: float | None = None
    switched: bool = False


def server_run(server_id: int) -> int:
    """Run jobs of this server one after another while there are any; returns how many.

    Any number of these may run at once for one server: claims never exceed its slots.
    The server never waits for MobileSD's bookkeeping: this thread only sends each job's
    request and reads its answer. Once a request is written (and not before, so as not to
    compete with it for the interpreter's lock), the job's monitor starts, a reserving
    thread chooses the next job, reserves it and builds its request, and a storing thread
    stores the previous job's images and completes it. When the images arrive, one
    statement starts the reserved job on the slot the finished one hands over, and its
    request goes out at once. (Without a reservation, e.g. after a failure, the next job
    is claimed as usual.) At most one finished job waits for storage at a time. The helper
    threads' work yields, briefly, to any server of this worker that waits for its next
    request (`servers_waiting`), e.g. while a batch starts many loops at once.
    """
    return _ServerLoop(server_id).run()


# The server loops running in this process, by server id: a nudge for a server whose loop
# runs here lets that loop reserve a job queued after its running job's request went out.
_loops: dict[int, "_ServerLoop"] = {}
_loops_lock = threading.Lock()


def server_reserve_again(server_id: int) -> bool:
    """Ask this process's loop of the server, if one runs here, to reserve the job after
    its running one, which it does unless it holds or is making a reservation already; True
    if it began one. A job queued after the running job's request went out (when the loop
    reserves) is then started from its reservation too, not claimed afresh once the running
    job ends. A loop in another worker process is not reached: its next claim decides."""
    with _loops_lock:
        loop = _loops.get(server_id)
    return loop is not None and loop.reserve_again()


class _ServerLoop:
    def __init__(self, server_id: int) -> None:
        self.server_id = server_id
        self.reserver = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"reserve-{server_id}",
            initializer=_reserver_started,
        )
        self.storer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{server_id}")
        self.kept = KeptThreads(server_id)
        self.reserving: Future[Reserved | None] | None = None
        self.storing: Future[None] | None = None
        # The job whose request is out and whose answer has not come (None otherwise), and
        # the lock under which it and `reserving` change, for `reserve_again`.
        self.running: Claim | None = None
        self.lock = threading.Lock()
        self.answered_at: float | None = None  # when the last job's answer came back
        self.waiting = False  # counted in `servers_waiting` until the next request is out

    def run(self) -> int:
        done = 0
        client: ForgeClient | None = None
        finished: tuple[Claim, Generated] | None = None
        self._wait_begins()
        with _loops_lock:
            _loops.setdefault(self.server_id, self)
        try:
            claim, prepared = self._next(finished=None, reserved=None)
            while claim is not None:
                client = _client_for(claim.server, client)
                bookkeeping = _Once(self._bookkeep, claim, finished)
                finished = None
                try:
                    with log_context(job_id=claim.job_id, server=claim.server.alias):
                        result = _generate_guarded(
                            claim, client, prepared, on_sent=bookkeeping, kept=self.kept
                        )
                finally:
                    bookkeeping()  # also when the request never went out
                    self.answered_at = time.monotonic()
                with self.lock:
                    self.running = None
                    reserving, self.reserving = self.reserving, None
                reserved = reserving.result() if reserving is not None else None
                self._wait_begins()  # (not before: the reservation must not wait for it)
                finished = (claim, result) if result is not None else None
                claim, prepared = self._next(finished=finished, reserved=reserved)
                done += 1
            return done
        finally:
            with _loops_lock:
                if _loops.get(self.server_id) is self:
                    del _loops[self.server_id]
            self._wait_ends()
            if finished is not None:
                # Also when the next claim failed: a generation, once finished, is stored.
                self._store(finished, after=[])
            self._close()
            if client is not None:
                client.close()

    def _next(
        self, *, finished: tuple[Claim, Generated] | None, reserved: "Reserved | None"
    ) -> "tuple[Claim | None, Prepared | None]":
        """`_next_job`, through a database outage shorter than the lease."""

        return retry_while_database_down(
            lambda: _next_job(self.server_id, finished=finished, reserved=reserved),
            within=settings.MOBILESD_LEASE_SECONDS,
            what=f"Next job of server {self.server_id}",
        )

    def _bookkeep(self, running: Claim, finished: tuple[Claim, Generated] | None) -> None:
        """Once `running`'s request is out: reserve the job after it, and store the one
        before it (after the reservation, which the next job needs first)."""
        self._wait_ends()
        if self.answered_at is not None:
            idle = time.monotonic() - self.answered_at
            metrics.dispatch_gap_observe(server=running.server.alias, seconds=idle)
        with self.lock:
            self.running = running
            if not shutting_down.is_set():
                self.reserving = self.reserver.submit(_reserve_guarded, running)
        if finished is not None:
            self._store(finished, after=[self.reserving] if self.reserving else [])

    def reserve_again(self) -> bool:
        """Reserve the job after the running one again, if a job runs and no reservation is
        held or being made (the last one found nothing); True if one was begun."""
        with self.lock:
            if self.running is None or shutting_down.is_set():
                return False
            if self.reserving is not None and not (
                self.reserving.done() and self.reserving.result() is None
            ):
                return False
            self.reserving = self.reserver.submit(_reserve_guarded, self.running)
            return True

    def _wait_begins(self) -> None:
        if not self.waiting:
            self.waiting = True
            servers_waiting.begin()

    def _wait_ends(self) -> None:
        if self.waiting:
            self.waiting = False
            servers_waiting.end()

    def _store(self, finished: tuple[Claim, Generated], *, after: list[Future[Any]]) -> None:
        if self.storing is not None:
            self.storing.result()  # bounds the images held in memory to two jobs'
        self.storing = self.storer.submit(_store_after, after, finished)

    def _close(self) -> None:
        if self.reserving is not None:
            reserved = self.reserving.result()
            if reserved is not None:
                try:
                    dispatch.job_unreserve(reserved=reserved.claim)
                except Exception:  # it lapses on its own after MOBILESD_LEASE_SECONDS
                    logger.exception("Could not give back reserved job %s", reserved.claim.job_id)
        if self.storing is not None:
            self.storing.result()
        for executor in (self.reserver, self.storer):
            _shut_down(executor, last=_close_this_threads_connection)
        self.kept.close()


def _reserver_started() -> None:
    servers_waiting.wait_until_none(YIELD_SECONDS)  # before its connection is opened
    try:
        dispatch.commit_without_flush(True)
    except Exception as exc:  # reservations then flush: slower, as correct
        logger.warning("Reservations will wait for the disk: %s", exc)


class _Once[**P]:
    """A call of `work(*args)` that happens the first time this is called, and only then."""

    def __init__(self, work: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
        self._call: Callable[[], None] | None = lambda: work(*args, **kwargs)

    def __call__(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call()


def _store_after(after: list[Future[Any]], finished: tuple[Claim, Generated]) -> None:
    wait(after)
    servers_waiting.wait_until_none(YIELD_SECONDS)
    with log_context(job_id=finished[0].job_id, server=finished[0].server.alias):
        _store_guarded(*finished)


def _client_for(
    server: Server, client: ForgeClient | None, *, read_timeout: float = READ_TIMEOUT
) -> ForgeClient:
    """The loop's client for `server`: one session, so each request reuses the connection
    (a new one when the server's address or credentials changed)."""
    if client is not None and client.endpoint == ServerEndpoint.from_server(server):
        return client
    if client is not None:
        client.close()
    return make_client(server, read_timeout=read_timeout)


class KeptThreads:
    """A server loop's thread for its jobs' monitors and its thread for their progress
    probes, kept from one job to the next with what they opened: the monitor's database
    connection and the probe's HTTP session. A monitor on a thread of its own opens both
    anew for every job: a PostgreSQL connection (and a backend process there), two
    threads, a TCP connection to the server, which cost more CPU than the job's heartbeats
    (bench/README.md, "Many servers").

    One thread each: a job's monitor starts once the previous job's has ended, which it
    does within moments of its job's end (its first heartbeat is due a heartbeat after
    its start)."""

    def __init__(self, server_id: int) -> None:
        self.monitors = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"monitor-{server_id}")
        self.probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"progress-{server_id}")
        self._probe_client: ForgeClient | None = None  # used on the probes' thread only

    def probe_client(self, server: Server) -> ForgeClient:
        """The probes' client for `server` (on the probes' thread)."""
        # Short reads: a probe answers within moments of a stop.
        self._probe_client = _client_for(
            server, self._probe_client, read_timeout=QUICK_READ_TIMEOUT
        )
        return self._probe_client

    def close(self) -> None:
        """End both threads (once the monitor and probe running there end), closing what
        they kept open."""
        _shut_down(self.monitors, last=_close_this_threads_connection)
        _shut_down(self.probes, last=self._close_probe_client)

    def _close_probe_client(self) -> None:
        if self._probe_client is not None:
            self._probe_client.close()
            self._probe_client = None


def _run_logged(work: Callable[[], None], what: str) -> None:
    """`work()` on a kept thread, whose executor would keep an exception to itself."""
    try:
        work()
    except Exception:
        logger.exception("%s failed", what)


@dataclass(frozen=True)
class Prepared:
    """A job's request to the server, built before it is sent."""

    payload: dict[str, Any]
    timeout: float  # the read timeout for this job (`job_timeout`)
    checkpoint_title: str | None
    # What identifies that checkpoint in the server's answer (`checkpoint_ran_as`).
    checkpoint_hashes: tuple[str, ...] = ()
    # The server's names of the LoRAs in the prompt sent.
    loras: tuple[str, ...] = ()
    # The endpoint: "txt2img", or "img2img" (modes img2img and inpaint).
    endpoint: str = "txt2img"


class LoraUnavailable(ForgePermanentError):
    """A LoRA the job names is not one of its server's: the job fails with this `code`
    (the server would silently generate without it)."""

    code = "lora_not_found"

    def __init__(self, detail: str, *, lora: str) -> None:
        super().__init__(detail)
        self.lora = lora


class LoraAmbiguous(LoraUnavailable):
    """A LoRA the job names matches several of its server's LoRAs."""

    code = "lora_ambiguous"


class InputUnavailable(ForgePermanentError):
    """An input image of the job (an upload) is no longer stored: the job fails with this
    `code` before anything is sent."""

    code = "input_missing"


@dataclass(frozen=True)
class Reserved:
    """The job reserved to run next, with its request when it could be built ahead."""

    claim: Claim
    prepared: Prepared | None


def _next_job(
    server_id: int,
    *,
    finished: tuple[Claim, Generated] | None,
    reserved: Reserved | None,
) -> tuple[Claim | None, Prepared | None]:
    """The job to send now: the reserved one if it can start on the finished job's slot,
    else a fresh claim (none while the worker shuts down)."""
    stopping = shutting_down.is_set()
    if reserved is not None:
        if (
            finished is not None
            and not stopping
            and dispatch.job_start_reserved(reserved=reserved.claim, finishing=finished[0])
        ):
            return reserved.claim, reserved.prepared
        dispatch.job_unreserve(reserved=reserved.claim)
    if stopping:
        return None, None
    claim = dispatch.job_claim_next(
        server_id=server_id, finishing=finished[0].job_id if finished else None
    )
    return claim, None


def _reserve_guarded(running: Claim) -> Reserved | None:
    """Reserve the job to run after `running` and build its request; never raises (the
    next claim then decides as usual)."""
    servers_waiting.wait_until_none(YIELD_SECONDS)
    try:
        claim = dispatch.job_reserve_next(running=running)
    except DATABASE_DOWN as exc:
        drop_broken_connection()
        logger.warning("Could not reserve the job after %s: %s", running.job_id, exc)
        return None
    except Exception:
        logger.exception("Could not reserve the job after %s", running.job_id)
        return None
    if claim is None:
        return None
    try:
        prepared = job_prepare(claim)
    except Exception as exc:
        # Built again when it starts, where the error is handled as the job's own.
        logger.debug("Request of reserved job %s not built ahead: %s", claim.job_id, exc)
        prepared = None
    return Reserved(claim, prepared)


def _close_this_threads_connection() -> None:
    # `connection` resolves to the calling thread's connection only when called there.
    connection.close()


def _shut_down(executor: ThreadPoolExecutor, *, last: Callable[[], None]) -> None:
    """End a one-thread executor once its work is done, `last` run on its thread first (what
    that thread opened, e.g. its database connection, is closed there)."""
    executor.submit(last).result()
    executor.shutdown()


def _generate_guarded(
    claim: Claim,
    client: ForgeClient,
    prepared: Prepared | None,
    *,
    on_sent: Callable[[], None] | None = None,
    kept: KeptThreads | None = None,
) -> Generated | None:
    try:
        return job_generate(claim, client=client, prepared=prepared, on_sent=on_sent, kept=kept)
    except DATABASE_DOWN as exc:
        # Before the request went out, or in its failure's bookkeeping: the job is not at
        # fault. Given back uncounted if the database returns, else its lease lapses.
        logger.warning("Job %s not run: the database is unavailable (%s)", claim.job_id, exc)
        _give_back(claim, error=f"The database was unavailable: {exc}")
        return None
    except Exception:
        # A bug must not kill the loop with the job stuck in processing: fail it.
        logger.exception("Unexpected error running job %s", claim.job_id)
        _fail_if_possible(claim, error="Internal error in MobileSD while running.")
        return None


def _give_back(claim: Claim, *, error: str) -> None:
    with contextlib.suppress(*DATABASE_DOWN):  # else its lease lapses and it is requeued
        retry_while_database_down(
            lambda: dispatch.job_release(claim=claim, error=error, count_attempt=False),
            within=settings.MOBILESD_LEASE_SECONDS,
            what=f"Release of job {claim.job_id}",
        )


def _fail_if_possible(claim: Claim, *, error: str) -> None:
    try:
        dispatch.job_fail(claim=claim, error=error)
    except DATABASE_DOWN as exc:
        drop_broken_connection()
        logger.warning("Job %s not failed (database: %s); its lease lapses", claim.job_id, exc)


def _store_guarded(claim: Claim, generated: Generated) -> None:
    try:
        _store_results(claim, generated)
    except _NoLongerOurs as lost:
        logger.info("Job %s %s while its completion waited for the database", claim.job_id, lost)
    except DATABASE_DOWN:
        # Logged by the retries; its lease lapses and it runs again: nothing else can be done
        # once the database has been away for longer than the lease.
        drop_broken_connection()
    except Exception:
        logger.exception("Unexpected error storing the images of job %s", claim.job_id)
        _fail_if_possible(claim, error="Internal error in MobileSD while storing images.")


class Monitor(threading.Thread):
    """Heartbeat, progress and cancellation for one running job (its own DB connection).

    The lease is renewed every beat, whatever else is slow: the progress probe runs in a
    thread of its own (a server busy generating may answer it slowly), and a beat that
    cannot reach the database fails alone (the next one tries again on a fresh
    connection), so an outage shorter than the lease costs the job nothing. Only a renewal
    that reaches the database and finds the job no longer ours ends the monitor.

    Progress (with the live preview) is written only when it changed, and at most every
    MOBILESD_PROGRESS_MIN_SECONDS: each write of it is an event to every follower of the
    job. Between two heartbeats a progress write renews the lease too.

    `kept`: the server loop's kept threads, on which the monitor and its probe then run
    (`begin`), keeping their connections for the next job's; else each has a thread of
    its own, and closes what it opened."""

    def __init__(self, claim: Claim, *, kept: KeptThreads | None = None) -> None:
        super().__init__(name=f"monitor-{claim.job_id}", daemon=True)
        self.claim = claim
        self.kept = kept
        self.stopping = threading.Event()
        self.failing = False  # the last beat could not reach the database
        self._written: dict[str, Any] | None = None  # the progress last written
        self._written_at = -math.inf
        self._written_version = 0  # the preview last written
        self._renewed_at = time.monotonic()

    def begin(self) -> None:
        """Run the monitor: on the kept monitor thread, or on its own."""
        if self.kept is None:
            self.start()
        else:
            self.kept.monitors.submit(_run_logged, self.run, f"Monitor of job {self.claim.job_id}")

    def stop(self) -> None:
        """Ask the monitor to end (it does within moments, closing its connections); not
        waited for, as the next job's request should not wait for it."""
        self.stopping.set()

    def run(self) -> None:
        heartbeat = settings.MOBILESD_HEARTBEAT_SECONDS
        every = settings.MOBILESD_PROGRESS_MIN_SECONDS
        tick = min(heartbeat, every) if every > 0 else heartbeat
        probe: _ProgressProbe | None = None
        started = time.monotonic()
        try:
            while not self.stopping.wait(tick):
                now = time.monotonic()
                # Started at the first heartbeat: most fast jobs never need it (each probe
                # costs the server a preview and this process its decoding).
                if probe is None and now - started >= heartbeat - tick / 2:
                    probe = _ProgressProbe(self.claim, tick, kept=self.kept)
                    probe.begin()
                reading = probe.latest() if probe is not None else None
                if reading is not None and (
                    reading.progress == self._written or now - self._written_at < every
                ):
                    reading = None  # unchanged, or too soon: the lease only, when due
                if reading is None and now - self._renewed_at < heartbeat - tick / 2:
                    continue
                # A beat may come a moment late (the lease has many to spare); a stop
                # meanwhile ends the monitor without it.
                servers_waiting.wait_until_none(YIELD_SECONDS)
                if self.stopping.is_set():
                    return
                lost = self._beat(reading, time.monotonic())
                if lost is None:
                    continue
                if lost in (LeaseLost.CANCELLED, LeaseLost.GONE):  # LOST: another worker runs it
                    client = make_client(self.claim.server, read_timeout=QUICK_READ_TIMEOUT)
                    try:
                        interrupt_if_current(client, self.claim.task_id)
                    finally:
                        client.close()
                return
        finally:
            if probe is not None:
                probe.stop()
            if self.kept is None:
                connection.close()

    def _beat(self, reading: "ProgressReading | None", now: float) -> LeaseLost | None:
        """Renew the lease (with `reading`, when given); None also when this beat failed."""
        progress = preview = version = None
        if reading is not None:
            progress = reading.progress
            if reading.preview_version != self._written_version:
                preview, version = reading.preview, reading.preview_version
        try:
            lost = dispatch.job_heartbeat(
                claim=self.claim, progress=progress, preview=preview, preview_version=version
            )
        except DATABASE_DOWN as exc:
            drop_broken_connection()
            if not self.failing:
                logger.warning("Heartbeat of job %s not written: %s", self.claim.job_id, exc)
            self.failing = True
            return None
        except Exception:
            logger.exception("Heartbeat of job %s failed", self.claim.job_id)
            return None
        if self.failing:
            logger.info("Heartbeat of job %s written again", self.claim.job_id)
            self.failing = False
        if lost is None:
            self._renewed_at = now
            if reading is not None:
                self._written, self._written_at = reading.progress, now
                self._written_version = reading.preview_version
        return lost


@dataclass(frozen=True)
class ProgressReading:
    """A running job's latest progress (the job's `progress` JSON: with `preview_id` and
    `preview_url` once there is a preview) and its latest preview, if any."""

    progress: dict[str, Any]
    preview: PreviewImage | None
    preview_version: int


class _ProgressProbe(threading.Thread):
    """Reads a running job's progress from its server every `interval`, in a thread of
    its own so that a slow answer never delays a heartbeat; the monitor reads the latest
    reading at each beat.

    Live previews are asked for incrementally (the server's id of the last one received);
    each new one (new bytes) is downscaled to WebP here, off the heartbeat's thread, and
    numbered: `preview_id` 1, 2, ... for this run of the job."""

    def __init__(self, claim: Claim, interval: float, *, kept: KeptThreads | None = None) -> None:
        super().__init__(name=f"progress-{claim.job_id}", daemon=True)
        self.claim = claim
        self.interval = interval
        self.kept = kept
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._latest: ProgressReading | None = None
        self._server_preview_id = -1
        self._preview_digest: bytes | None = None
        self._preview: PreviewImage | None = None
        self._version = 0

    def begin(self) -> None:
        """Run the probe: on the kept probe thread, or on its own."""
        if self.kept is None:
            self.start()
        else:
            self.kept.probes.submit(_run_logged, self.run, f"Progress of job {self.claim.job_id}")

    def stop(self) -> None:
        self.stopping.set()

    def latest(self) -> ProgressReading | None:
        """The latest reading (None before the first)."""
        with self._lock:
            return self._latest

    def run(self) -> None:
        # Short reads: a probe answers within moments of a stop.
        if self.kept is not None:
            client = self.kept.probe_client(self.claim.server)
        else:
            client = make_client(self.claim.server, read_timeout=QUICK_READ_TIMEOUT)
        try:
            while not self.stopping.is_set():
                servers_waiting.wait_until_none(YIELD_SECONDS)
                if self.stopping.is_set():
                    break
                reading = self._read(client)
                if reading is not None:
                    with self._lock:
                        self._latest = reading
                self.stopping.wait(self.interval)
        finally:
            if self.kept is None:
                client.close()

    def _read(self, client: ForgeClient) -> ProgressReading | None:
        try:
            progress = client.progress_for_task(
                self.claim.task_id, live_preview_id=self._server_preview_id
            )
        except ForgeError as exc:
            logger.debug("No progress for %s: %s", self.claim.task_id, exc)
            return None
        if progress.preview is not None:
            self._take_preview(progress.preview, progress.preview_id)
        reading: dict[str, Any] = {
            "fraction": progress.progress or 0.0,
            "eta_seconds": progress.eta,
            "step": progress.step,
            "total_steps": progress.total_steps,
            "queue_position": progress.queue_position,
            "textinfo": progress.textinfo,
            "active": progress.active,
            "queued": progress.queued,
        }
        if self._version:
            reading["preview_id"] = self._version
            reading["preview_url"] = preview_url(self.claim.job_id, self._version)
        return ProgressReading(reading, self._preview, self._version)

    def _take_preview(self, image: bytes, server_id: int | None) -> None:
        if server_id is not None:
            self._server_preview_id = server_id
        # Without a web UI the same image comes at every probe: only a new one counts.
        digest = hashlib.blake2b(image, digest_size=16).digest()
        if digest == self._preview_digest:
            return
        self._preview_digest = digest
        try:
            self._preview = preview_webp(image)
        except InvalidPreviewError as exc:
            logger.debug("Preview of %s not readable: %s", self.claim.task_id, exc)
            return
        self._version += 1


def interrupt_if_current(client: ForgeClient, task_id: str) -> bool:
    """Interrupt the server only if its running task is `task_id`; True if it was."""
    try:
        if client.is_task_active(task_id):
            client.interrupt()
            logger.info("Interrupted task %s", task_id)
            return True
    except ForgeError as exc:
        logger.warning("Could not interrupt task %s: %s", task_id, exc)
    return False


def _resolve_checkpoint(server: Server, requested: str) -> tuple[str, tuple[str, ...]]:
    """The server's exact title for `requested`, from the model cache, with its known
    hashes; refreshed once from the server before failing, and failing permanently rather
    than let the server silently generate with another model."""
    loaded = server.loaded_checkpoint
    if loaded and checkpoint_key(requested) == checkpoint_key(loaded):
        # The common case, without a query: the model already in use.
        return loaded, checkpoint_hashes(loaded)
    resolution = resolve(requested, server_checkpoints(server=server))
    if resolution.model is None:
        refreshed = server_refresh_models(server=server)
        if refreshed.error:
            error = refreshed.error
            raise ForgeTransientError(f"Could not list the server's checkpoints: {error}")
        resolution = resolve(requested, server_checkpoints(server=server))
    model = resolution.model
    if model is None:
        raise ForgePermanentError(resolution.message(server.alias))
    return model.title, checkpoint_hashes(model.title, model.short_hash, model.sha256)


def _resolve_loras(server: Server, requested: list[str]) -> dict[str, str]:
    """The server's name (`<lora:NAME:...>`) of each LoRA the job names, from the model
    cache, refreshed once from the server if one is missing; a LoRA the server does not
    have, or that names several of its LoRAs, fails the job permanently (LoraUnavailable)
    rather than being left out silently."""
    if not requested:
        return {}
    resolutions = [resolve_lora(name, server_loras(server=server)) for name in requested]
    if any(resolution.error == "not_found" for resolution in resolutions):
        refreshed = server_refresh_models(server=server)
        if refreshed.error:
            raise ForgeTransientError(f"Could not list the server's LoRAs: {refreshed.error}")
        models = server_loras(server=server)
        resolutions = [resolve_lora(name, models) for name in requested]
    names = {}
    for resolution in resolutions:
        model = resolution.model
        if model is None:
            error = LoraAmbiguous if resolution.error == "ambiguous" else LoraUnavailable
            raise error(resolution.message(server.alias), lora=resolution.requested)
        names[resolution.requested] = cast(LoraLike, model).name
    return names


def _vae_baseline(server: Server, setting: str | None) -> dict[str, Any]:
    """The server's own VAE settings as MobileSD remembers them, first reading the one the
    job changes (`setting`) from its options if MobileSD never changed it there: remembered
    before the job's value is sent, a job naming no VAE sends it back later.

    The options are read only then, never for a job that names no VAE. If they cannot be
    read, the job runs with its VAE all the same and nothing is remembered (the next job
    changing the setting reads them again; a job naming no VAE before that cannot restore
    the server's own value). `server` is the claim's row, read at the claim (a baseline
    another slot remembered since is seen by the next claim)."""
    baseline = server.vae_baseline or {}
    if setting is None or setting in baseline:
        return baseline
    try:
        with make_client(server) as client:
            options = client.options()
    except ForgeError as exc:
        logger.warning(
            "Could not read the options of %s; its own %s is not remembered: %s",
            server.alias,
            setting,
            exc,
        )
        return baseline
    if setting not in options:
        return baseline  # a server without the option: nothing to change back
    server.vae_baseline = server_remember_vae_baseline(
        server_id=server.pk, setting=setting, value=options[setting]
    )
    return server.vae_baseline


def job_prepare(claim: Claim) -> Prepared:
    """Build a claimed (or reserved) job's request: its checkpoint resolved to the server's
    exact title and its LoRAs to the server's names, its parameters mapped, its timeout
    scaled to its size. Raises ForgeError subclasses (e.g. permanent for an unknown
    checkpoint, LoraUnavailable for an unknown LoRA)."""
    job, server = claim.job, claim.server
    params = job.generation_params or {}
    requested = str(params.get("checkpoint_name") or "").strip()
    title, hashes = _resolve_checkpoint(server, requested) if requested else (None, ())
    lora_names = _resolve_loras(server, requested_loras(params))
    endpoint = "img2img" if image_mode(params) else "txt2img"
    inputs = InputImages(init=[], mask=None)
    if endpoint == "img2img" or script_upload_refs(params):
        try:
            inputs = job_input_images(job=job)
        except InputMissing as exc:
            raise InputUnavailable(str(exc)) from exc
    if endpoint == "img2img":
        payload = build_img2img_payload(
            params,
            init_images=inputs.init,
            mask=inputs.mask,
            task_id=claim.task_id,
            checkpoint_title=title,
            flavour=server.flavour or None,
            lora_names=lora_names,
        )
    else:
        payload = build_txt2img_payload(
            params,
            task_id=claim.task_id,
            checkpoint_title=title,
            flavour=server.flavour or None,
            lora_names=lora_names,
        )
    # VAE, modules, styles, hires fields and scripts, by the server's names (issue 16).
    resolved = extensions_resolve(server, params)
    apply_extras(
        payload,
        params,
        resolved=resolved,
        flavour=server.flavour or None,
        # A unit's image named by upload id goes as that upload's bytes (base64).
        images=inputs.script_image,
        baseline=_vae_baseline(
            server, vae_setting(params, forge=sends_modules(resolved, server.flavour))
        ),
    )
    timeout = job_timeout(
        steps=int(payload.get("steps") or 20),
        width=int(payload.get("width") or 512),
        height=int(payload.get("height") or 512),
        images=int(payload.get("n_iter") or 1) * int(payload.get("batch_size") or 1),
        hires=bool(payload.get("enable_hr")),
    )
    return Prepared(
        payload=payload,
        timeout=timeout,
        checkpoint_title=title,
        checkpoint_hashes=hashes,
        loras=tuple(loras_sent(payload["prompt"])) if lora_names else (),
        endpoint=endpoint,
    )


def job_generate(
    claim: Claim,
    *,
    client: ForgeClient | None = None,
    prepared: Prepared | None = None,
    on_sent: Callable[[], None] | None = None,
    kept: KeptThreads | None = None,
) -> Generated | None:
    """Generate a claimed job on its server: the result to store, or None when the job was
    failed or released for a retry instead. `prepared`: its request, if built already;
    `on_sent`: called once the request is written; `kept`: the server loop's threads for
    the job's monitor (Monitor).

    A job whose server reports that it used another checkpoint than the one resolved
    fails (`checkpoint_mismatch`): it is never completed on the wrong model."""
    server = claim.server
    own_client = client is None
    client = client or make_client(server)
    monitor: Monitor | None = None
    try:
        prepared = prepared or job_prepare(claim)
        monitor = Monitor(claim, kept=kept)
        sending = time.monotonic()
        generate = client.img2img if prepared.endpoint == "img2img" else client.txt2img
        result = generate(
            prepared.payload, timeout=prepared.timeout, on_sent=_Once(_sent, monitor, on_sent)
        )
    except ForgeUnreachableError as exc:
        # Nothing reached the server: the job waits, uncounted, until the server is back.
        server_mark_offline(server_id=server.pk, error=str(exc))
        dispatch.job_release(claim=claim, error=str(exc), count_attempt=False)
        return None
    except ForgeTransientError as exc:
        # It reached the server, which failed it (a 5xx, OOM, a timeout): the server's fault
        # as far as anyone can tell; enough of them in a row quarantine it.
        dispatch.job_release(claim=claim, error=str(exc), count_attempt=True)
        server_note_job_failure(server_id=server.pk, error=str(exc))
        server.consecutive_failures += 1  # this loop's row: its next success resets it
        return None
    except LoraUnavailable as exc:
        dispatch.job_fail(claim=claim, error=exc.detail, code=exc.code, details={"lora": exc.lora})
        return None
    except InputUnavailable as exc:
        dispatch.job_fail(claim=claim, error=exc.detail, code=exc.code)
        return None
    except ExtensionUnavailable as exc:
        dispatch.job_fail(
            claim=claim, error=exc.detail, code=exc.missing_code, details={"field": exc.field}
        )
        return None
    except ForgePermanentError as exc:
        dispatch.job_fail(claim=claim, error=exc.detail or str(exc), code=_refusal_code(exc))
        return None
    finally:
        if monitor is not None:
            monitor.stop()
        if own_client:
            client.close()
    run_seconds = time.monotonic() - sending

    title = prepared.checkpoint_title
    if title and _ran_elsewhere(claim, prepared, result.info):
        return None
    note_loaded = False
    switched = False
    if title and title != server.loaded_checkpoint:
        switched = True
        metrics.checkpoint_switch_observe(server=server.alias, seconds=time.monotonic() - sending)
        server.loaded_checkpoint = title
        note_loaded = not _note_loaded_checkpoint(server, title)
    return Generated(
        result=result,
        checkpoint=title,
        loras=prepared.loras,
        note_loaded=note_loaded,
        run_seconds=run_seconds,
        switched=switched,
    )


# A server's own refusal of a script it does not have (A1111/Forge `script_name_to_index`,
# the always-on check): the job's code says so, as when MobileSD finds it first.
_SCRIPT_REFUSAL = re.compile(
    r"script '.*' not found|cannot have a selectable script", re.IGNORECASE
)


def _refusal_code(exc: ForgePermanentError) -> str | None:
    detail = exc.detail or str(exc)
    if not _SCRIPT_REFUSAL.search(detail):
        return None
    return "script_kind_mismatch" if "selectable" in detail.lower() else "script_not_found"


def _note_loaded_checkpoint(server: Server, title: str) -> bool:
    """Tell the database the checkpoint the server now has loaded, before the next claim
    (which prefers jobs for it). False when the database cannot be reached: the job's
    completion tells it then, as the images must not wait for it, nor be lost to it."""
    try:
        server_note_loaded_checkpoint(server_id=server.pk, title=title)
    except DATABASE_DOWN as exc:
        drop_broken_connection()
        logger.warning("Loaded checkpoint of %s not noted yet: %s", server.alias, exc)
        return False
    return True


def _ran_elsewhere(claim: Claim, prepared: Prepared, info: dict[str, Any]) -> bool:
    """True, having failed the job, when the server's info names another checkpoint than
    the one sent (it drops an override it does not know and uses its loaded model). Its
    model list is then read again, as ours was wrong, and the checkpoint it really has
    loaded is noted. An info without hash or name proves nothing: False."""
    title = str(prepared.checkpoint_title)
    reported_hash, reported_name = info.get("sd_model_hash"), info.get("sd_model_name")
    same = checkpoint_ran_as(
        title=title,
        hashes=prepared.checkpoint_hashes,
        reported_hash=reported_hash,
        reported_name=reported_name,
    )
    if same is not False:
        return False
    server = claim.server
    server_refresh_models(server=server)
    ran = server_checkpoint_reported(
        server=server, reported_hash=reported_hash, reported_name=reported_name
    )
    ran_title = ran.title if ran is not None else _reported_label(info) or "an unknown model"
    server_note_loaded_checkpoint(server_id=server.pk, title=ran.title if ran else "")
    server.loaded_checkpoint = ran.title if ran else ""
    dispatch.job_fail(
        claim=claim,
        error=f"Server '{server.alias}' generated with '{ran_title}' instead of the requested "
        f"checkpoint '{title}'; its images were discarded.",
        code="checkpoint_mismatch",
        details={"checkpoint": ran_title, "requested_checkpoint": title},
    )
    return True


def _reported_label(info: dict[str, Any]) -> str | None:
    """The checkpoint a generation's info names, as `name [hash]` (None: it names none)."""
    name, digest = info.get("sd_model_name"), info.get("sd_model_hash")
    name = name if isinstance(name, str) and name else None
    digest = digest if isinstance(digest, str) and digest else None
    if name and digest:
        return f"{name} [{digest}]"
    return name or digest


def _sent(monitor: "Monitor", on_sent: Callable[[], None] | None) -> None:
    """The job's request is out: its monitor starts, then the caller's work."""
    monitor.begin()
    if on_sent is not None:
        on_sent()


def _seed_of(info: dict[str, Any], index: int) -> int | None:
    seeds = info.get("all_seeds")
    if isinstance(seeds, list) and index < len(seeds) and isinstance(seeds[index], int):
        return seeds[index]
    seed = info.get("seed")
    return seed + index if isinstance(seed, int) else None


class _NoLongerOurs(Exception):
    """The job's lease was found lost while its completion waited for the database."""


def _recording[T](claim: Claim, work: Callable[[], T], what: str) -> T:
    """A database step of storing a finished job, tried again through an outage shorter
    than the lease; each retry renews the lease first, and raises `_NoLongerOurs` if the
    job is no longer ours (the caller then discards the images)."""

    def renew() -> None:
        lost = dispatch.job_heartbeat(claim=claim, progress=None)
        if lost is not None:
            raise _NoLongerOurs(str(lost))

    return retry_while_database_down(
        work,
        within=settings.MOBILESD_LEASE_SECONDS,
        what=f"{what} of job {claim.job_id}",
        before_retry=renew,
    )


def _store_results(claim: Claim, generated: Generated) -> None:
    """Write the images, then complete the job with the checkpoint it ran on (the one sent,
    or for a job that named none, the one the server's info names); if it is no longer
    ours (cancelled or taken over meanwhile), remove them. The images are written once:
    only the database steps are tried again while the database is away."""
    images, info = generated.result.images, generated.result.info
    if claim.job.retry_count:
        # Files of an earlier attempt whose worker died before recording them (a first
        # attempt has none: the folder listing is spared on the common path).
        orphans = _recording(claim, lambda: orphan_image_files(claim.job_id), "Orphan files")
        delete_image_files(orphans)
    when = timezone.now()
    first = info.get("index_of_first_image")
    skip = first if isinstance(first, int) and 0 < first <= len(images) else 0
    records: list[ImageRecord] = []
    try:
        for index in range(len(images) - skip):
            data = images[skip + index]
            images[skip + index] = b""  # let each decoded image go once it is written
            stored = save_image_file(
                job_id=claim.job_id, index=index, data=data, seed=_seed_of(info, index), when=when
            )
            records.append(
                ImageRecord(
                    index=index,
                    name=stored.name,
                    seed=_seed_of(info, index),
                    width=stored.width,
                    height=stored.height,
                    infotext=stored.infotext,
                )
            )
    except (InvalidImageError, OSError) as exc:
        _delete(records)
        error = f"Could not store an image: {exc}"
        _recording(
            claim,
            lambda: dispatch.job_release(claim=claim, error=error, count_attempt=True),
            "Release",
        )
        return

    def complete() -> bool:
        server = claim.server
        if generated.note_loaded and generated.checkpoint:
            server_note_loaded_checkpoint(server_id=server.pk, title=generated.checkpoint)
        checkpoint = generated.checkpoint or _checkpoint_reported(server, info)
        return dispatch.job_complete(
            claim=claim,
            images=records,
            generation_info=info,
            checkpoint=checkpoint,
            loras=generated.loras,
        )

    try:
        completed = _recording(claim, complete, "Completion")
    except (_NoLongerOurs, *DATABASE_DOWN):
        _delete(records)
        raise
    if not completed:
        logger.info("Job %s changed while storing; discarding its images", claim.job_id)
        _delete(records)
        return
    _note_success(claim.server)
    _record_performance(claim, generated)


def _note_success(server: Server) -> None:
    """A job completed on `server`: its failures are no longer in a row. Only when the
    server row read at the loop's last claim counted some (a claim follows every failure),
    so that a server that does not fail costs no statement per job."""
    if not server.consecutive_failures:
        return
    try:
        server_note_job_success(server_id=server.pk)
    except DATABASE_DOWN as exc:
        drop_broken_connection()
        logger.warning("Success on server %s not noted: %s", server.pk, exc)
        return
    server.consecutive_failures = 0


def _record_performance(claim: Claim, generated: Generated) -> None:
    """Add the completed job's timing to its server's measurements (for the ETAs of the
    jobs waiting); a failure to is logged, never the job's."""
    if generated.run_seconds is None:
        return
    try:
        server_performance_record(
            server_id=claim.server.pk,
            work=job_work(claim.job.generation_params),
            run_seconds=generated.run_seconds,
            loaded=(claim.job.checkpoint_key or None) if generated.switched else None,
        )
    except DATABASE_DOWN as exc:
        drop_broken_connection()
        logger.warning("Timing of job %s not recorded: %s", claim.job_id, exc)
    except Exception:
        logger.exception("Timing of job %s not recorded", claim.job_id)


def _checkpoint_reported(server: Server, info: dict[str, Any]) -> str | None:
    """The title of the server's checkpoint that its info names, else the info's own
    `name [hash]`; None when the info names none."""
    found = server_checkpoint_reported(
        server=server,
        reported_hash=info.get("sd_model_hash"),
        reported_name=info.get("sd_model_name"),
    )
    return found.title if found is not None else _reported_label(info)


def _delete(records: list[ImageRecord]) -> None:
    for record in records:
        default_storage.delete(record.name)
