"""A minimal Graph API client for handlers that answer back, with ``appsecret_proof``.

Workplace admins can require ``appsecret_proof`` on every call; we always
send it when the integration has both an access token and an app secret.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from typing import Any

from .config import Integration
from .errors import ConfigError
from .signature import appsecret_proof

DEFAULT_GRAPH_URL = "https://graph.facebook.com"


class GraphClient:
    def __init__(self, integration: Integration, base_url: str | None = None) -> None:
        if not integration.access_token:
            raise ConfigError(
                f"integration {integration.name!r} has no access token; set access_token "
                "(or RECEIVER_ACCESS_TOKEN) to call the Graph API"
            )
        self.integration = integration
        self.base_url = (
            base_url or os.environ.get("RECEIVER_GRAPH_URL") or DEFAULT_GRAPH_URL
        ).rstrip("/")

    def params(self) -> dict[str, str]:
        token = self.integration.access_token or ""
        params = {"access_token": token}
        if self.integration.app_secrets:
            params["appsecret_proof"] = appsecret_proof(token, self.integration.app_secrets[0])
        return params

    def post(self, path: str, data: dict[str, Any], timeout: float = 10.0) -> Any:
        body = urllib.parse.urlencode({**data, **self.params()}).encode()
        url = f"{self.base_url}/{path.lstrip('/')}"
        request = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
