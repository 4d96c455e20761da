"""Generation servers: the Forge / AUTOMATIC1111 machines jobs run on."""

from django.core.validators import MinValueValidator
from django.db import models

from servers_app.validators import validate_alias, validate_api_url


class Server(models.Model):
    """A Forge / A1111 server, addressed by its alias in the API.

    The password is kept as given, because MobileSD must send it to the server; the API
    never returns it. Health fields are written by workers only.
    """

    alias = models.CharField(max_length=100, unique=True, validators=[validate_alias])
    api_url = models.CharField(max_length=500, validators=[validate_api_url])
    username = models.CharField(max_length=150, blank=True, default="")
    password = models.CharField(max_length=255, blank=True, default="")
    enabled = models.BooleanField(default=True)
    slots = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Health, written by workers.
    is_online = models.BooleanField(null=True, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)
    loaded_checkpoint = models.CharField(max_length=500, blank=True, default="", editable=False)
    # "forge" or "a1111", detected from the server's options; "" until first seen.
    flavour = models.CharField(max_length=16, blank=True, default="", editable=False)
    # The server's checkpoint titles as last listed (until the full model cache exists).
    model_titles = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        ordering = ["alias"]
        constraints = [
            models.CheckConstraint(condition=models.Q(slots__gte=1), name="server_slots_gte_1"),
        ]

    def __str__(self) -> str:
        return self.alias

    @property
    def has_password(self) -> bool:
        return bool(self.password)
