from django.apps import AppConfig


class CivitaiConfig(AppConfig):
    name = "civitai_app"
    verbose_name = "Civitai"
