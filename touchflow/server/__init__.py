"""``touchflow serve``: the web server (webhooks from providers and mail clients)."""

from touchflow.server.app import create_app

__all__ = ["create_app"]
