"""Channels routes: the hot-path HTTP consumers and (in a later issue) the chat WebSocket."""

http_consumer_routes: list = []
websocket_routes: list = []
