from django.urls import path
from rest_framework.routers import SimpleRouter

from servers_app import views

router = SimpleRouter(trailing_slash=False)
router.register("servers", views.ServerViewSet, basename="server")

urlpatterns = [
    path("checkpoints", views.CheckpointListView.as_view(), name="checkpoint-list"),
    path("loras", views.LoraListView.as_view(), name="lora-list"),
    path(
        "servers/<str:alias>/refresh-models",
        views.ServerRefreshModelsView.as_view(),
        name="server-refresh-models",
    ),
    path("servers/<str:alias>/lists", views.ServerListsView.as_view(), name="server-lists"),
    path("servers/<str:alias>/pause", views.ServerPauseView.as_view(), name="server-pause"),
    path("servers/<str:alias>/resume", views.ServerResumeView.as_view(), name="server-resume"),
    *router.urls,
]
