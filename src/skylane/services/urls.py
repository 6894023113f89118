"""Where runs reach the API from."""

from __future__ import annotations

from skylane.settings import Settings


def api_url_for_runs(settings: Settings) -> str:
    """`SKYLANE_PUBLIC_API_URL`, else the server's own address (a wildcard bind address becomes
    loopback, which is what a local process run can reach)."""
    if settings.public_api_url:
        return settings.public_api_url.rstrip("/")
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{settings.port}"
