"""ASGI entry point (the Procfile's web: gunicorn mobilesd.asgi with uvicorn workers, see
mobilesd.workers): Django's handler, with the event stream's requests holding no thread while
they wait (core_app.asgi.LongLivedRequestsHandler); chunked request bodies are read (or
refused) before Django sees them (core_app.asgi)."""

import os

import django
from django.urls import reverse

from core_app.asgi import ChunkedBodyMiddleware, LongLivedRequestsHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application() does

application = ChunkedBodyMiddleware(LongLivedRequestsHandler(long_lived=[reverse("events")]))
