"""What a handler can ask FastAPI for, besides the request: ``Depends(shared_resources)``."""

from __future__ import annotations

from fastapi import Request

from ...resources import Resources


def shared_resources(request: Request) -> Resources:
    """The resources ``resources.py`` opened at start-up (tests may override this)."""
    resources: Resources = request.app.state.resources
    return resources
