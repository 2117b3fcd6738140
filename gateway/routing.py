"""Channels routes: the hot-path HTTP consumers (and, in a later issue, the chat WebSocket)."""

from django.urls import path

from gateway.consumers import ChatCompletionsConsumer, ChatConsumer

http_consumer_routes = [
    path("v1/chat/complete", ChatConsumer.as_asgi()),
    path("v1/chat/completions", ChatCompletionsConsumer.as_asgi()),
]
websocket_routes: list = []
