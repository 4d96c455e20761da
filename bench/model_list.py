"""Benchmark: listing a model cache of 10 000 checkpoints through the API.

    .venv/bin/python bench/model_list.py [--models 10000] [--repeat 30]

Creates a throw-away PostgreSQL database (mobilesd_bench_models), fills the cache with
`--models` checkpoints spread over 4 servers (a quarter of them on two servers at once, as
the same file), and times GET /api/v1/checkpoints through Django's full request stack:
first page, a deep page, a search, and a server filter. Prints p50 / p95 per query.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DB_NAME = "mobilesd_bench_models"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    recreate_database()
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")
    os.environ["MOBILESD_ALLOW_ANONYMOUS"] = "true"
    os.environ["MOBILESD_THROTTLE_RATE"] = "1000000/min"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from servers_app.model_cache import checkpoint_rows
    from servers_app.models import CachedModel, Server

    call_command("migrate", verbosity=0)
    servers = [
        Server.objects.create(alias=f"gpu{i}", api_url=f"http://gpu{i}:7860") for i in range(4)
    ]
    rows = []
    for n in range(args.models):
        sha = f"{n:064x}"
        listing = [
            {
                "title": f"Folder{n % 37}\\model_{n:05d}.safetensors [{sha[:10]}]",
                "hash": sha[:10],
                "sha256": sha,
            }
        ]
        (row,) = checkpoint_rows(listing)
        owners = [servers[n % 4]] + ([servers[(n + 1) % 4]] if n % 4 == 0 else [])
        for owner in owners:
            rows.append(CachedModel(server=owner, **row.fields()))
    started = time.perf_counter()
    CachedModel.objects.bulk_create(rows, batch_size=2000)
    from django.db import connection

    with connection.cursor() as cursor:  # as autovacuum would after a real refresh
        cursor.execute("ANALYZE servers_app_cachedmodel")
    print(
        f"Inserted {len(rows)} cache rows ({args.models} distinct models) "
        f"in {time.perf_counter() - started:.1f}s"
    )

    client = Client()
    queries = {
        "first page (limit 50)": "/api/v1/checkpoints?limit=50",
        "deep page (offset 9000)": "/api/v1/checkpoints?limit=50&offset=9000",
        "search 'model_0042'": "/api/v1/checkpoints?search=model_0042",
        "server filter": "/api/v1/checkpoints?server_alias=gpu2&limit=200",
    }
    print(f"\n{'query':28} {'p50 ms':>8} {'p95 ms':>8}  total")
    for label, url in queries.items():
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content
        total = response["X-Total-Count"]
        p95 = statistics.quantiles(timings, n=20)[-1]
        print(f"{label:28} {statistics.median(timings):8.1f} {p95:8.1f}  {total}")
    print(
        f"\nCommand: .venv/bin/python bench/model_list.py --models {args.models} "
        f"--repeat {args.repeat}"
    )


if __name__ == "__main__":
    main()
