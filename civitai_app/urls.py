from django.urls import path

from civitai_app import views

urlpatterns = [
    path("image-info", views.ImageInfoView.as_view(), name="civitai-image-info"),
    path("download-model", views.DownloadModelView.as_view(), name="civitai-download-model"),
    path("downloads", views.DownloadListView.as_view(), name="civitai-download-list"),
    path(
        "downloads/<str:download_id>",
        views.DownloadDetailView.as_view(),
        name="civitai-download-detail",
    ),
    path(
        "downloads/<str:download_id>/cancel",
        views.DownloadCancelView.as_view(),
        name="civitai-download-cancel",
    ),
    path(
        "downloads/<str:download_id>/retry",
        views.DownloadRetryView.as_view(),
        name="civitai-download-retry",
    ),
]
