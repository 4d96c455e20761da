"""The dashboard app (its templates, static files and pages) and the admin that uses its
site as the default `admin.site`."""

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class DashboardConfig(AppConfig):
    name = "dashboard_app"
    verbose_name = "Operator dashboard"


class DashboardAdminConfig(AdminConfig):
    """django.contrib.admin, with dashboard_app.sites.DashboardSite as `admin.site`, so that
    @admin.register in every app registers there."""

    default_site = "dashboard_app.sites.DashboardSite"
