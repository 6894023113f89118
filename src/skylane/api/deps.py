"""Shared FastAPI dependencies."""

from __future__ import annotations

from fastapi import Request

from skylane.settings import Settings
from skylane.store.repository import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings
