"""Container health check: ``python -m <package>.healthcheck`` exits 0 only when ready.

For orchestrators that run a command inside the container (ECS ``healthCheck``, docker
compose, Docker ``HEALTHCHECK``) rather than probing ``/readyz`` over the network. It reads
the same settings as the service, so it asks the port the service really listens on.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from ...runtime.settings import load_settings
from .settings import HttpSettings

TIMEOUT_SECONDS = 3.0

# A service listening on every interface is reachable on loopback from inside the container.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def main() -> int:
    settings = load_settings(HttpSettings)
    host = _WILDCARDS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as error:
        print(f"not ready: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"not ready: {url} answered {status}", file=sys.stderr)
        return 1
    return 0
