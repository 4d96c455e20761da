"""User names are checked for control characters; credentials written inside an api_url
(`http://user:pw@host`, refused from now on) move to the username and password fields, so
that no stored URL carries a password and every existing row stays valid."""

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from django.db import migrations, models

import servers_app.validators


def move_url_credentials(apps: Any, schema_editor: Any) -> None:
    Server = apps.get_model("servers_app", "Server")
    username_max = Server._meta.get_field("username").max_length
    password_max = Server._meta.get_field("password").max_length
    for server in Server.objects.filter(api_url__contains="@"):
        try:
            parts = urlsplit(server.api_url)
        except ValueError:
            continue
        userinfo, at, host = parts.netloc.rpartition("@")
        if not at:
            continue
        user, _, password = userinfo.partition(":")
        user, password = unquote(user), unquote(password)
        # Credentials already in their own fields win over the URL's.
        if not server.username and len(user) <= username_max and len(password) <= password_max:
            server.username, server.password = user, password
        server.api_url = urlunsplit(parts._replace(netloc=host))
        server.save(update_fields=["api_url", "username", "password"])


class Migration(migrations.Migration):
    dependencies = [
        ("servers_app", "0003_server_models_dir"),
    ]

    operations = [
        migrations.AlterField(
            model_name="server",
            name="username",
            field=models.CharField(
                blank=True,
                default="",
                max_length=150,
                validators=[servers_app.validators.validate_username],
            ),
        ),
        migrations.RunPython(move_url_credentials, migrations.RunPython.noop),
    ]
