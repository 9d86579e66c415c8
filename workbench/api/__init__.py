"""The REST shim: FastAPI routers over the service layer. ``create_app()`` builds the app."""

from .app import create_app

__all__ = ["create_app"]
