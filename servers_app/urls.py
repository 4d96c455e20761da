from rest_framework.routers import SimpleRouter

from servers_app.views import ServerViewSet

router = SimpleRouter(trailing_slash=False)
router.register("servers", ServerViewSet, basename="server")

urlpatterns = router.urls
