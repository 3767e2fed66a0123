"""The operator's API client (kube/rest.py) against an in-memory answer function instead of a
network: the requests go through the real `rest.Api` (paths, query, JSON bodies, errors), and
`answer(request)` gives each one's (status, body): JSON, or bytes sent as they are."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
from lightkube import KubeConfig

from scalelab.kube import rest

SERVER = "https://api.example"
Answer = Callable[[httpx.Request], tuple[int, Any]]


def status(code: int, reason: str) -> tuple[int, dict[str, Any]]:
    """An error answer as the API server words it (a Status)."""
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                  "reason": reason, "message": reason}  # fmt: skip


def fake_api(answer: Answer) -> rest.Api:
    """A rest.Api whose every request `answer` answers; JSON bodies both ways."""

    def handle(request: httpx.Request) -> httpx.Response:
        code, body = answer(request)
        if body is None or isinstance(body, bytes):  # no body, or one that is no JSON
            return httpx.Response(code, content=body or b"")
        return httpx.Response(code, json=body)

    config = KubeConfig.from_server(SERVER).get()
    assert config is not None
    return rest.Api(config, transport=httpx.MockTransport(handle))


def sent(request: httpx.Request) -> Any:
    """The JSON body of a request (None when it has none)."""
    return json.loads(request.content) if request.content else None
