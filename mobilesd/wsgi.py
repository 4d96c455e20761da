"""WSGI entry point (gunicorn mobilesd.wsgi); chunked request bodies are read (or refused)
before Django sees them (core_app.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

from core_app.wsgi import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")

application = ChunkedBodyMiddleware(get_wsgi_application())
