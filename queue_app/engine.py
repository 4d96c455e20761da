"""Running claimed jobs on their Forge / A1111 server.

A worker thread runs `server_run`: claim a job for a free slot of one server, run it,
and at once claim that server's next job, until there is none. While `txt2img` blocks, a
monitor thread renews the job's lease, writes its progress, and interrupts the server if
the job is cancelled (only when the server's current task is this job's).
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from queue_app import dispatch
from queue_app.dispatch import Claim, ImageRecord
from queue_app.images import (
    InvalidImageError,
    delete_image_files,
    orphan_image_files,
    save_image_file,
)
from queue_app.models import Job
from queue_app.params import build_txt2img_payload
from servers_app.checkpoints import checkpoint_key
from servers_app.client import (
    ForgeClient,
    ForgeError,
    ForgePermanentError,
    ForgeTransientError,
    ForgeUnreachableError,
    ServerEndpoint,
    Txt2ImgResult,
    job_timeout,
)
from servers_app.models import Server
from servers_app.resolver import resolve
from servers_app.selectors import server_checkpoints
from servers_app.services import (
    server_mark_offline,
    server_note_loaded_checkpoint,
    server_refresh_models,
)

logger = logging.getLogger(__name__)


def make_client(server: Server, *, read_timeout: float = 30.0) -> ForgeClient:
    return ForgeClient(
        ServerEndpoint.from_server(server),
        connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
    )


# Set when the worker is asked to stop: the job in flight finishes, no new one is claimed
# (the rest stay pending for the reconcile task or another worker).
shutting_down = threading.Event()


def server_run(server_id: int, *, on_job_done: Callable[[], None] | None = None) -> int:
    """Run jobs of this server one after another while there are any; returns how many.

    Any number of these may run at once for one server: claims never exceed its slots.
    The loop is a two-stage pipeline: as soon as a job's images arrive, the next job is
    claimed (not counting the finished one's slot) and sent from a generation thread, and
    the finished job's images are stored and the job completed while the server already
    works on the next. The server never waits for MobileSD's bookkeeping.
    """
    done = 0
    client: ForgeClient | None = None
    finished: tuple[Claim, Txt2ImgResult] | None = None  # generated, not yet stored
    generator = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"generate-{server_id}")
    try:
        while True:
            claim = None
            if not shutting_down.is_set():
                claim = dispatch.job_claim_next(
                    server_id=server_id, finishing=finished[0].job_id if finished else None
                )
            if claim is None and finished is None:
                return done
            generating = None
            if claim is not None:
                assert claim.server is not None
                if client is None or client.endpoint != ServerEndpoint.from_server(claim.server):
                    if client is not None:
                        client.close()
                    # One session for the loop: the next request reuses the connection.
                    client = make_client(claim.server)
                generating = generator.submit(_generate_guarded, claim, client)
            if finished is not None:
                _store_guarded(*finished)
                finished = None
                done += 1
                if on_job_done is not None:
                    on_job_done()
            if generating is not None:
                assert claim is not None
                result = generating.result()
                if result is not None:
                    finished = (claim, result)
                else:
                    done += 1
    finally:
        # The generation thread's database connection is its own: close it there.
        generator.submit(_close_this_threads_connection).result()
        generator.shutdown()
        if client is not None:
            client.close()


def _close_this_threads_connection() -> None:
    # `connection` resolves to the calling thread's connection only when called there.
    connection.close()


def _generate_guarded(claim: Claim, client: ForgeClient) -> Txt2ImgResult | None:
    try:
        return job_generate(claim, client=client)
    except Exception:
        # A bug must not kill the loop with the job stuck in processing: fail it.
        logger.exception("Unexpected error running job %s", claim.job_id)
        dispatch.job_fail(claim=claim, error="Internal error in MobileSD while running.")
        return None


def _store_guarded(claim: Claim, result: Txt2ImgResult) -> None:
    try:
        _store_results(claim, result.images, result.info)
    except Exception:
        logger.exception("Unexpected error storing the images of job %s", claim.job_id)
        dispatch.job_fail(claim=claim, error="Internal error in MobileSD while storing images.")


class Monitor(threading.Thread):
    """Heartbeat, progress and cancellation for one running job (its own DB connection)."""

    def __init__(self, claim: Claim, server: Server) -> None:
        super().__init__(name=f"monitor-{claim.job_id}", daemon=True)
        self.claim = claim
        self.server = server
        self.stopping = threading.Event()
        self.state = "ok"  # or "cancelled", "lost", "gone"
        self.interrupted = False

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)

    def run(self) -> None:
        interval = settings.MOBILESD_HEARTBEAT_SECONDS
        client: ForgeClient | None = None
        try:
            while not self.stopping.wait(interval):
                if client is None:  # made at the first beat: most fast jobs never need it
                    # Short reads: a progress probe must never hold up the heartbeat or stop.
                    client = make_client(self.server, read_timeout=5.0)
                progress = self._progress(client)
                self.state = dispatch.job_heartbeat(claim=self.claim, progress=progress)
                if self.state == "ok":
                    continue
                if self.state in {"cancelled", "gone"}:
                    self.interrupted = interrupt_if_current(client, self.claim.task_id)
                return
        except Exception:
            logger.exception("Monitor of job %s stopped", self.claim.job_id)
        finally:
            if client is not None:
                client.close()
            connection.close()

    def _progress(self, client: ForgeClient) -> dict[str, Any] | None:
        try:
            progress = client.progress_for_task(self.claim.task_id)
        except ForgeError as exc:
            logger.debug("No progress for %s: %s", self.claim.task_id, exc)
            return None
        return {
            "fraction": progress.progress or 0.0,
            "eta_seconds": progress.eta,
            "step": progress.step,
            "total_steps": progress.total_steps,
            "queue_position": progress.queue_position,
            "textinfo": progress.textinfo,
            "active": progress.active,
            "queued": progress.queued,
        }


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


def _resolve_checkpoint(server: Server, requested: str) -> str:
    """The server's exact title for `requested`, from the model cache; refreshed once from
    the server before failing, and failing permanently rather than let the server silently
    generate with another model."""
    loaded = server.loaded_checkpoint
    if loaded and checkpoint_key(requested) == checkpoint_key(loaded):
        return loaded  # the common case, without a query: the model already in use
    resolution = resolve(requested, server_checkpoints(server=server))
    if resolution.model is not None:
        return resolution.model.title
    refreshed = server_refresh_models(server=server)
    if refreshed.error:
        raise ForgeTransientError(f"Could not list the server's checkpoints: {refreshed.error}")
    resolution = resolve(requested, server_checkpoints(server=server))
    if resolution.model is not None:
        return resolution.model.title
    raise ForgePermanentError(resolution.message(server.alias))


def job_execute(claim: Claim, *, client: ForgeClient | None = None) -> None:
    """Run one claimed job to its end: completed, failed, released for a retry, or discarded
    because it was cancelled meanwhile."""
    result = job_generate(claim, client=client)
    if result is not None:
        _store_results(claim, result.images, result.info)


def job_generate(claim: Claim, *, client: ForgeClient | None = None) -> Txt2ImgResult | None:
    """Generate a claimed job on its server: the result to store, or None when the job was
    failed or released for a retry instead."""
    job = claim.job or Job.objects.select_related("server").get(pk=claim.job_id)
    server = claim.server or job.server
    assert server is not None  # a claim always sets the server
    params = job.generation_params or {}
    own_client = client is None
    client = client or make_client(server)
    monitor: Monitor | None = None
    try:
        requested = str(params.get("checkpoint_name") or "").strip()
        title = _resolve_checkpoint(server, requested) if requested else None
        payload = build_txt2img_payload(
            params, task_id=claim.task_id, checkpoint_title=title, flavour=server.flavour or None
        )
        timeout = job_timeout(
            steps=int(payload.get("steps") or 20),
            width=int(payload.get("width") or 512),
            height=int(payload.get("height") or 512),
            images=int(payload.get("n_iter") or 1) * int(payload.get("batch_size") or 1),
            hires=bool(payload.get("enable_hr")),
        )
        monitor = Monitor(claim, server)
        monitor.start()
        result = client.txt2img(payload, timeout=timeout)
    except ForgeUnreachableError as exc:
        # Nothing reached the server: the job waits, uncounted, until the server is back.
        server_mark_offline(server_id=server.pk, error=str(exc))
        dispatch.job_release(claim=claim, error=str(exc), count_attempt=False)
        return None
    except ForgeTransientError as exc:
        dispatch.job_release(claim=claim, error=str(exc), count_attempt=True)
        return None
    except ForgePermanentError as exc:
        dispatch.job_fail(claim=claim, error=exc.detail or str(exc))
        return None
    finally:
        if monitor is not None:
            monitor.stop()
        if own_client:
            client.close()

    if title and title != server.loaded_checkpoint:
        # Before the next claim, which prefers jobs for the checkpoint now loaded.
        server_note_loaded_checkpoint(server_id=server.pk, title=title)
    return result


def _seed_of(info: dict[str, Any], index: int) -> int | None:
    seeds = info.get("all_seeds")
    if isinstance(seeds, list) and index < len(seeds) and isinstance(seeds[index], int):
        return seeds[index]
    seed = info.get("seed")
    return seed + index if isinstance(seed, int) else None


def _store_results(claim: Claim, images: list[bytes], info: dict[str, Any]) -> None:
    """Write the images, then complete the job; if it is no longer ours (cancelled or taken
    over meanwhile), remove them."""
    if claim.job is None or claim.job.retry_count:
        # Files of an earlier attempt whose worker died before recording them (a first
        # attempt has none: the folder listing is spared on the common path).
        delete_image_files(orphan_image_files(claim.job_id))
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
        dispatch.job_release(claim=claim, error=error, count_attempt=True)
        return
    if not dispatch.job_complete(claim=claim, images=records, generation_info=info):
        logger.info("Job %s changed while storing; discarding its images", claim.job_id)
        _delete(records)


def _delete(records: list[ImageRecord]) -> None:
    for record in records:
        default_storage.delete(record.name)
