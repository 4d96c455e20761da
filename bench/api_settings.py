"""Settings of the web process of bench/api.py: MobileSD's own, with a URLconf that adds
the benchmark's floor view (bench/api_urls.py). Only the bench starts a process with
`DJANGO_SETTINGS_MODULE=bench.api_settings`; the product never imports this module."""

from mobilesd.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"
