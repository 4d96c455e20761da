"""Remove the uploads no job references that were deleted or are unused for the retention
(the periodic task does the same)."""

from typing import Any

from django.core.management.base import BaseCommand

from queue_app.uploads import uploads_remove_unused


class Command(BaseCommand):
    help = (
        "Remove uploads no job references, deleted by their owner or unused for "
        "MOBILESD_UPLOAD_RETENTION_SECONDS."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        removed = uploads_remove_unused()
        self.stdout.write(f"Removed {removed} unused upload(s).")
