"""REST API and web page (FastAPI + uvicorn, installed with `pip install 'lookalike[server]'`).

`create_app` and `ServerSettings` are imported lazily so that `import lookalike.server` (and the
CLI that registers `serve`) works without FastAPI installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lookalike.server import app

        return getattr(app, name)
    raise AttributeError(name)
