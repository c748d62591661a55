"""Where the heavy work runs: `local` (this process, `base`), `ray` (a Ray cluster, `ray`), or
a backend a user registers (`register_backend`)."""

from coretune.backends.base import (
    BACKEND_REGISTRY,
    Backend,
    LocalBackend,
    backend_names,
    check_backend_name,
    close_all,
    get_backend,
    register_backend,
)

__all__ = ["BACKEND_REGISTRY", "Backend", "LocalBackend", "backend_names", "check_backend_name",
           "close_all", "get_backend", "register_backend"]
