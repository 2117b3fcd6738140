"""Channels routes: the hot-path HTTP consumers and the chat WebSocket.
Each consumer's path is its own `path` attribute, the one definition routing and the schema share."""

from typing import Any

from django.urls import URLPattern, path

from gateway.consumers import CHAT_CONSUMERS
from gateway.jobs.consumers import JOB_CONSUMERS
from gateway.messages import MESSAGES_CONSUMERS
from gateway.ws import PATH as CHAT_SOCKET_PATH
from gateway.ws import ChatSocket

http_consumer_routes: list[URLPattern] = [
    path(consumer.path.removeprefix("/"), consumer.as_asgi())
    for consumer in (*CHAT_CONSUMERS, *MESSAGES_CONSUMERS, *JOB_CONSUMERS)
]
websocket_routes: list[Any] = [path(CHAT_SOCKET_PATH.removeprefix("/"), ChatSocket.as_asgi())]
