"""Query parameters of the download list."""

import django_filters

from civitai_app.models import Download, DownloadStatus


class DownloadFilter(django_filters.FilterSet):
    """`status` (bad values are a 400); newest first."""

    status = django_filters.ChoiceFilter(choices=DownloadStatus.choices)

    class Meta:
        model = Download
        fields = ["status"]
