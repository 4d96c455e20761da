from django.apps import AppConfig


class ServersConfig(AppConfig):
    name = "servers_app"
    verbose_name = "Generation servers"
