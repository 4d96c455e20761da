from django.urls import path

from queue_app import batch_views, control_views, upload_views, views

urlpatterns = [
    path("generate", views.GenerateView.as_view(), name="generate"),
    path("queue", control_views.QueueView.as_view(), name="queue"),
    path("queue/pause", control_views.QueuePauseView.as_view(), name="queue-pause"),
    path("queue/resume", control_views.QueueResumeView.as_view(), name="queue-resume"),
    path("queue/cancel", control_views.QueueCancelView.as_view(), name="queue-cancel"),
    path("batches", batch_views.BatchListView.as_view(), name="batch-list"),
    path("batches/<str:batch_id>", batch_views.BatchDetailView.as_view(), name="batch-detail"),
    path(
        "batches/<str:batch_id>/cancel", batch_views.BatchCancelView.as_view(), name="batch-cancel"
    ),
    path("uploads", upload_views.UploadListView.as_view(), name="upload-list"),
    path("uploads/<str:upload_id>", upload_views.UploadDetailView.as_view(), name="upload-detail"),
    path("uploads/<str:upload_id>/file", upload_views.UploadFileView.as_view(), name="upload-file"),
    path("queue/jobs", views.JobListView.as_view(), name="job-list"),
    path("queue/jobs/<str:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("queue/jobs/<str:job_id>/status", views.JobStatusView.as_view(), name="job-status"),
    path("queue/jobs/<str:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("queue/jobs/<str:job_id>/retry", views.JobRetryView.as_view(), name="job-retry"),
    path("queue/jobs/<str:job_id>/move", control_views.JobMoveView.as_view(), name="job-move"),
    path("queue/jobs/<str:job_id>/images", views.JobImageListView.as_view(), name="job-image-list"),
    path("queue/jobs/<str:job_id>/preview", views.JobPreviewView.as_view(), name="job-preview"),
    path(
        "queue/jobs/<str:job_id>/images/<int:index>",
        views.JobImageFileView.as_view(),
        name="job-image",
    ),
    path(
        "queue/jobs/<str:job_id>/images/<int:index>/thumbnail",
        views.JobImageThumbnailView.as_view(),
        name="job-image-thumbnail",
    ),
]
