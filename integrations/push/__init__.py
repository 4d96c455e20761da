"""Push notifications through Apprise (ntfy, Gotify, Pushover, Telegram, Discord, e-mail...)."""
