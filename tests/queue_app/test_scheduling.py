"""The scheduling policy (queue_app.scheduling) on its own: which of the candidates a free
server takes next. No database: the candidates are built in memory, in queue order."""

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from queue_app.models import Job
from queue_app.scheduling import (
    job_choose_after,
    job_choose_next,
    jobs_passed_over,
    lookahead,
)
from servers_app.checkpoints import checkpoint_key

SERVER = 1
START = datetime(2026, 1, 1, tzinfo=UTC)
AGE = itertools.count()


@dataclass
class Model:
    """A checkpoint of the server, as the resolver reads it."""

    title: str
    model_name: str
    relative_path: str
    filename: str
    short_hash: str = "0123456789"
    sha256: str = ""


def model(path: str) -> Model:
    name = path.rsplit("/", 1)[-1]
    return Model(f"{path} [0123456789]", name.rsplit(".", 1)[0], path, name)


def jobs(*checkpoints: str, priority: int = 0, server: int | None = SERVER, **fields) -> list[Job]:
    """One job per checkpoint ("" for none), each younger than every job made before."""
    made: list[Job] = []
    for checkpoint in checkpoints:
        made.append(
            Job(
                id=uuid.uuid4(),
                server_id=server,
                target_server_alias="Laptop" if server else "any",
                generation_params={"positive_prompt": "x", "checkpoint_name": checkpoint},
                checkpoint_key=checkpoint_key(checkpoint),
                priority=priority,
                created_at=START + timedelta(seconds=next(AGE)),
                **fields,
            )
        )
    return made


def no_checkpoints() -> list[Model]:
    raise AssertionError("the server's checkpoints were read, but no 'any' job needs them")


def choose(candidates: list[Job], loaded: str | None = None, models=()) -> Job | None:
    return job_choose_next(candidates=candidates, loaded=loaded, checkpoints=lambda: models)


def test_nothing_to_choose_from_chooses_nothing():
    assert choose([]) is None


def test_with_no_checkpoint_loaded_the_oldest_runs():
    candidates = jobs("a.safetensors", "b.safetensors")

    assert choose(candidates, loaded=None) is candidates[0]


def test_the_oldest_job_for_the_loaded_checkpoint_runs_first():
    a, b1, b2 = jobs("a.safetensors", "b.safetensors", "b.safetensors")

    assert choose([a, b1, b2], loaded="b.safetensors") is b1


def test_the_loaded_checkpoint_matches_in_any_form():
    a, b = jobs("a.safetensors", "sdxl/B.safetensors")

    assert choose([a, b], loaded="sdxl\\b.safetensors [0123456789]") is b


def test_a_job_without_checkpoint_needs_no_switch():
    a, free = jobs("a.safetensors", "")

    assert choose([a, free], loaded="b.safetensors") is free


def test_no_job_for_the_loaded_checkpoint_means_the_oldest_runs():
    a, c = jobs("a.safetensors", "c.safetensors")

    assert choose([a, c], loaded="b.safetensors") is a


def test_priority_comes_before_the_loaded_checkpoint():
    (urgent,) = jobs("a.safetensors", priority=5)
    (matching,) = jobs("b.safetensors")

    assert choose([urgent, matching], loaded="b.safetensors") is urgent


def test_the_loaded_checkpoint_is_preferred_among_the_jobs_of_the_head_priority():
    urgent_a, urgent_b = jobs("a.safetensors", "b.safetensors", priority=5)

    assert choose([urgent_a, urgent_b], loaded="b.safetensors") is urgent_b


def test_a_head_passed_over_max_passes_times_runs_regardless(settings):
    settings.MOBILESD_SCHEDULER_MAX_PASSES = 3
    (head,) = jobs("a.safetensors", passed_over=3)
    (matching,) = jobs("b.safetensors")

    assert choose([head, matching], loaded="b.safetensors") is head


def test_a_head_passed_over_fewer_times_still_gives_way(settings):
    settings.MOBILESD_SCHEDULER_MAX_PASSES = 3
    (head,) = jobs("a.safetensors", passed_over=2)
    (matching,) = jobs("b.safetensors")

    assert choose([head, matching], loaded="b.safetensors") is matching


def test_an_any_job_runs_only_where_its_checkpoint_is():
    (any_job,) = jobs("a.safetensors", server=None)

    assert choose([any_job], models=[model("b.safetensors")]) is None
    assert choose([any_job], models=[model("a.safetensors")]) is any_job


def test_an_any_job_that_cannot_run_here_is_skipped_for_the_next():
    (any_job,) = jobs("a.safetensors", server=None)
    (own,) = jobs("c.safetensors")

    assert choose([any_job, own], models=[]) is own


def test_an_any_job_without_checkpoint_runs_anywhere():
    (any_job,) = jobs("", server=None)

    assert choose([any_job], models=[]) is any_job


def test_the_servers_checkpoints_are_read_only_for_any_jobs():
    candidates = jobs("a.safetensors", "b.safetensors")

    chosen = job_choose_next(candidates=candidates, loaded=None, checkpoints=no_checkpoints)

    assert chosen is candidates[0]


def test_the_jobs_older_than_the_chosen_one_are_passed_over():
    a1, a2, b, a3 = jobs("a.safetensors", "a.safetensors", "b.safetensors", "a.safetensors")

    assert jobs_passed_over(candidates=[a1, a2, b, a3], chosen=b) == [a1.pk, a2.pk]
    assert jobs_passed_over(candidates=[a1, a2, b, a3], chosen=a1) == []


def test_the_job_after_a_running_one_follows_its_checkpoint():
    (running,) = jobs("b.safetensors")
    a, b = jobs("a.safetensors", "b.safetensors")

    after = job_choose_after(
        running=running, candidates=[a, b], loaded="a.safetensors", checkpoints=no_checkpoints
    )

    assert after is b  # b is loaded once the running job ends


def test_the_job_after_a_running_one_without_checkpoint_follows_the_loaded_one():
    (running,) = jobs("")
    a, b = jobs("a.safetensors", "b.safetensors")

    after = job_choose_after(
        running=running, candidates=[a, b], loaded="b.safetensors", checkpoints=no_checkpoints
    )

    assert after is b


def test_an_any_job_is_never_chosen_to_follow_a_running_one():
    (running,) = jobs("a.safetensors")
    (any_job,) = jobs("", server=None)

    after = job_choose_after(
        running=running, candidates=[any_job], loaded=None, checkpoints=lambda: []
    )

    assert after is None


@pytest.mark.parametrize("size", [1, 8, 20])
def test_the_lookahead_is_the_setting(settings, size):
    settings.MOBILESD_SCHEDULER_LOOKAHEAD = size

    assert lookahead() == size
