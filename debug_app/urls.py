from django.urls import path

from debug_app import views

urlpatterns = [
    path("verify-checkpoint", views.VerifyCheckpointView.as_view(), name="debug-verify-checkpoint"),
    path("models-cache", views.ModelsCacheView.as_view(), name="debug-models-cache"),
]
