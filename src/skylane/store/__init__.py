from skylane.store.db import create_engine_for, migrate

__all__ = ["create_engine_for", "migrate"]
