"""ASGI entry point (the Procfile's web: gunicorn mobilesd.asgi with uvicorn workers, see
mobilesd.workers); chunked request bodies are read (or refused) before Django sees them
(core_app.asgi)."""

import os

from django.core.asgi import get_asgi_application

from core_app.asgi import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")

application = ChunkedBodyMiddleware(get_asgi_application())
