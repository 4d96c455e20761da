"""The gallery's cost does not grow with the history: no page counts the images or the
jobs, the first page is read in the image index's order, the neighbours read a row each,
and the checkpoint choices one index probe per checkpoint."""

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dashboard_app.selectors import gallery_checkpoints
from dashboard_app.sites import GALLERY_PAGE_SIZE
from queue_app.models import Job, JobImage, JobStatus
from tests.dashboard_app.test_site import finished, make_job
from tests.support import assert_read_in_index_order, explained

CHECKPOINTS = ("juggernautXL", "ponyRealism", "sdxl_base")
JOB_TABLE = Job._meta.db_table
IMAGE_TABLE = JobImage._meta.db_table


def counts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


def reads_of(queries: CaptureQueriesContext, table: str) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if f'FROM "{table}"' in q["sql"]]


def rows_read(nodes: list[dict[str, Any]], table: str) -> int:
    """How many rows of `table` the plan, as run, read (every loop of every scan)."""
    scans = [node for node in nodes if node.get("Relation Name") == table]
    assert scans
    return sum(int(node["Actual Rows"] * node["Actual Loops"]) for node in scans)


@pytest.fixture
def big_gallery(server) -> list[Job]:
    """A few thousand jobs, most completed with one or two images made by one of three
    checkpoints, analysed, so that PostgreSQL plans as it would for a long history."""
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans (EXPLAIN (FORMAT JSON))")
    owner = get_user_model().objects.create(username="painter")
    now = timezone.now()
    jobs = []
    for i in range(4000):
        job = Job(
            server=server,
            target_server_alias=server.alias,
            generation_params={"positive_prompt": f"picture {i}"},
            owner=owner,
            status=JobStatus.COMPLETED if i % 5 else JobStatus.FAILED,
            completed_at=now,
            result_details={"generation_info": {"sd_model_name": CHECKPOINTS[i % 3]}},
        )
        jobs.append(job)
    Job.objects.bulk_create(jobs, batch_size=2000)
    images = [
        JobImage(job=job, index=index, file=f"jobs/{job.pk.hex[:2]}/{job.pk.hex}_{index}.png")
        for n, job in enumerate(jobs)
        if job.status == JobStatus.COMPLETED
        for index in range(1 + n % 2)
    ]
    JobImage.objects.bulk_create(images, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {JOB_TABLE}")
        cursor.execute(f"ANALYZE {IMAGE_TABLE}")
    return jobs


# --- on any database ---------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"page": "2"}, {"checkpoint": "ponyRealism", "q": "a"}])
def test_the_gallery_counts_no_images_nor_jobs(params, admin_client, server):
    for n in range(GALLERY_PAGE_SIZE + 3):
        finished(server, f"a picture {n}", checkpoint=CHECKPOINTS[n % 3])

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:gallery"), params)

    assert response.status_code == 200
    assert response.context["cards"]
    assert counts(queries) == []


def test_the_image_page_counts_no_images_nor_jobs(admin_client, server):
    jobs = [finished(server, f"a picture {n}") for n in range(3)]

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(
            reverse("admin:gallery_image", args=[jobs[1].pk, 0]), {"checkpoint": "juggernautXL"}
        )

    assert response.context["newer_url"].startswith(
        reverse("admin:gallery_image", args=[jobs[2].pk, 0])
    )
    assert response.context["older_url"].startswith(
        reverse("admin:gallery_image", args=[jobs[0].pk, 0])
    )
    assert counts(queries) == []


def test_a_page_past_the_last_says_there_are_no_older_images(admin_client, server):
    finished(server)

    response = admin_client.get(reverse("admin:gallery"), {"page": "7"})

    page = response.content.decode()
    assert response.context["cards"] == []
    assert "No older images." in page
    assert "page=6" in page  # Newer, back towards the images
    assert 'rel="next"' not in page


@pytest.mark.parametrize("page", ["0", "-3", "x", "1e3", "9" * 40])
def test_a_page_number_out_of_range_is_clamped_not_an_error(page, admin_client, server):
    finished(server)

    response = admin_client.get(reverse("admin:gallery"), {"page": page})

    assert response.status_code == 200


def test_a_single_page_shows_its_exact_number_of_images(admin_client, server):
    finished(server, images=3)

    response = admin_client.get(reverse("admin:gallery"))

    assert re.search(r'class="msd-count-line">\s*3 images<', response.content.decode())
    assert 'aria-label="Pages"' not in response.content.decode()


def test_the_checkpoint_choices_are_those_of_completed_jobs_sorted(server):
    finished(server, checkpoint="sdxl_base")
    finished(server, checkpoint="animagine")
    finished(server, checkpoint="sdxl_base")
    finished(server, checkpoint="")
    make_job(server, JobStatus.COMPLETED, result_details={"generation_info": {}})
    make_job(server, JobStatus.COMPLETED, result_details=None)
    make_job(
        server,
        JobStatus.FAILED,
        result_details={"generation_info": {"sd_model_name": "only_failed"}},
    )

    assert gallery_checkpoints() == ["animagine", "sdxl_base"]


def test_the_checkpoint_choices_are_read_through_their_index(server):
    finished(server, checkpoint="sdxl_base")
    with CaptureQueriesContext(connection) as queries:
        gallery_checkpoints()
    (sql,) = reads_of(queries, JOB_TABLE)

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: make it choose
            cursor.execute(f"EXPLAIN {sql}")
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "job_completed_checkpoint" in plan


def test_sqlite_reads_the_first_page_in_the_image_order(admin_client, server):
    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's plans (EXPLAIN QUERY PLAN)")
    finished(server)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(reverse("admin:gallery"))
        admin_client.get(reverse("admin:dashboard_status"))
    pages = [sql for sql in reads_of(queries, IMAGE_TABLE) if "LIMIT" in sql]

    assert len(pages) == 2
    for sql in pages:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            plan = [row[-1] for row in cursor.fetchall()]
        assert f"SCAN {IMAGE_TABLE}" in plan, plan
        assert not [step for step in plan if "TEMP B-TREE" in step], plan


# --- PostgreSQL, a long history ---------------------------------------------------------------


def test_the_checkpoint_choices_read_a_row_per_checkpoint(big_gallery):
    with CaptureQueriesContext(connection) as queries:
        names = gallery_checkpoints()
    (sql,) = reads_of(queries, JOB_TABLE)

    assert names == sorted(CHECKPOINTS)
    nodes = explained(sql, analyze=True)
    assert {n["Node Type"] for n in nodes if n.get("Relation Name") == JOB_TABLE} <= {
        "Index Scan",
        "Index Only Scan",
    }
    # One probe for the first name and one after each: never the 3,200 completed jobs.
    assert rows_read(nodes, JOB_TABLE) <= 2 * (len(CHECKPOINTS) + 1)


@pytest.mark.parametrize("params", [{}, {"page": "2"}])
def test_the_first_pages_are_read_in_the_image_index_order(params, admin_client, big_gallery):
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:gallery"), params)
    assert len(response.context["cards"]) == GALLERY_PAGE_SIZE
    (page,) = [sql for sql in reads_of(queries, IMAGE_TABLE) if "LIMIT" in sql]

    nodes = explained(page, analyze=True)
    assert_read_in_index_order(nodes, IMAGE_TABLE)
    # The page and the one after it, and the images of failed jobs skipped among them.
    assert rows_read(nodes, IMAGE_TABLE) <= 3 * GALLERY_PAGE_SIZE + 2


def test_the_neighbours_read_a_row_or_two(admin_client, big_gallery):
    middle = JobImage.objects.order_by("pk")[1000]
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(
            reverse("admin:gallery_image", args=[middle.job_id, middle.index])
        )
    assert response.context["newer_url"]
    assert response.context["older_url"]
    neighbours = [sql for sql in reads_of(queries, IMAGE_TABLE) if re.search(r'"id" [<>] ', sql)]

    assert len(neighbours) == 2
    for sql in neighbours:
        nodes = explained(sql, analyze=True)
        assert_read_in_index_order(nodes, IMAGE_TABLE)
        assert rows_read(nodes, IMAGE_TABLE) <= 3
