"""GraphQL over HTTP (httpx) and over WebSocket (graphql-transport-ws)."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Iterator, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import httpx

from .errors import BadInput, TriggersError, Unavailable, Unauthorized, error_for

log = logging.getLogger("triggers_client")

JSONObject = Dict[str, Any]


def _raise_errors(errors: Any, url: str) -> None:
    first = errors[0] if isinstance(errors, list) and errors else {}
    if not isinstance(first, dict):
        raise TriggersError(f"unexpected error from {url}: {errors!r}")
    extensions = first.get("extensions") or {}
    code = extensions.get("code") if isinstance(extensions, dict) else None
    raise error_for(code, str(first.get("message", "unknown error")), extensions)


class Transport:
    """Sends GraphQL documents to one server; turns every failure into a
    :class:`~triggers_client.errors.TriggersError`."""

    def __init__(self, url: str, token: Optional[str], timeout: float) -> None:
        self.url = url.rstrip("/")
        self.endpoint = self.url + "/graphql"
        self.token = token
        self.timeout = timeout
        headers = {"User-Agent": "triggers-client-python"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def execute(self, query: str, variables: Optional[JSONObject] = None) -> Tuple[JSONObject, JSONObject]:
        """Runs ``query``; returns ``(data, extensions)`` or raises the error's class."""
        try:
            response = self._http.post(self.endpoint, json={"query": query, "variables": variables or {}})
        except httpx.TimeoutException as exc:
            raise Unavailable(f"triggers server at {self.url} did not answer in {self.timeout} s ({exc})") from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach the triggers server at {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("errors"):
            _raise_errors(body["errors"], self.url)
        if response.status_code == 401:
            raise Unauthorized(f"the triggers server at {self.url} refused the API token")
        if response.status_code == 413:
            raise BadInput(f"request too large for the triggers server at {self.url}")
        if response.status_code >= 500 or not isinstance(body, dict):
            raise Unavailable(
                f"triggers server at {self.url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        if response.status_code >= 400:
            raise BadInput(f"triggers server at {self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        return body.get("data") or {}, body.get("extensions") or {}

    def subscribe(self, query: str, variables: JSONObject) -> Iterator[JSONObject]:
        """Yields the ``data`` of each ``next`` message of one subscription.

        Raises :class:`Unavailable` when the connection cannot be made or drops
        (the caller reconnects), the error's class when the server answers with
        an error, and returns when the server completes the stream.
        """
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        parts = urlsplit(self.endpoint)
        ws_url = urlunsplit(parts._replace(scheme="wss" if parts.scheme == "https" else "ws"))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = connect(ws_url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                         additional_headers=headers, open_timeout=self.timeout)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 401:
                raise Unauthorized(f"the triggers server at {self.url} refused the API token") from exc
            raise Unavailable(f"cannot reach the triggers server at {ws_url}: {exc}") from exc
        with ws:
            try:
                yield from self._follow(ws, ws_url, query, variables)
            except ConnectionClosed as exc:
                raise Unavailable(f"the subscription to {ws_url} was closed: {exc}") from exc
            except (OSError, TimeoutError) as exc:
                raise Unavailable(f"the subscription to {ws_url} failed: {exc}") from exc

    def _follow(self, ws: Any, ws_url: str, query: str, variables: JSONObject) -> Iterator[JSONObject]:
        init: JSONObject = {"type": "connection_init"}
        if self.token:
            init["payload"] = {"Authorization": f"Bearer {self.token}"}
        ws.send(json.dumps(init))
        ack = json.loads(ws.recv(timeout=self.timeout))
        if ack.get("type") != "connection_ack":
            raise Unauthorized(f"the triggers server at {self.url} refused the subscription: {ack}")
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}))
        while True:
            message = json.loads(ws.recv())
            kind = message.get("type")
            if kind == "next":
                payload = message.get("payload") or {}
                if payload.get("errors"):
                    _raise_errors(payload["errors"], self.url)
                yield payload.get("data") or {}
            elif kind == "error":
                _raise_errors(message.get("payload"), self.url)
            elif kind == "complete":
                return
            elif kind == "ping":
                ws.send(json.dumps({"type": "pong"}))
