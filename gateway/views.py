"""DRF views for the operational endpoints and the short, database-backed API resources."""

from __future__ import annotations

import os

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.modality import Modality
from gateway.errors import ApiError
from gateway.health import readiness
from providers.routing import routing_table


class PublicView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]


class HealthView(PublicView):
    @extend_schema(
        summary="Liveness: the process answers",
        responses=inline_serializer("Health", {"status": serializers.CharField()}),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyView(PublicView):
    @extend_schema(
        summary="Readiness: database, cache and broker reachable (503 names what is not)",
        responses=inline_serializer(
            "Ready",
            {
                "status": serializers.CharField(),
                "checks": serializers.DictField(child=serializers.CharField()),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        checks = readiness()
        failing = {name: result for name, result in checks.items() if result != "ok"}
        if failing:
            detail = "; ".join(f"{name}: {result}" for name, result in failing.items())
            raise ApiError(
                f"Not ready: {detail}", status=503, type="api_error", code="not_ready", extra={"checks": checks}
            )
        return Response({"status": "ready", "checks": checks})


class MetricsView(PublicView):
    @extend_schema(summary="Prometheus metrics (text exposition format)", responses={200: str})
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)


def metrics_registry() -> CollectorRegistry:
    """This process's registry, or with several workers, all of theirs (prometheus multiprocess mode)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The model name to send; a name with '*' is a pattern.")
    object = serializers.CharField(default="model")
    created = serializers.IntegerField(default=0)
    owned_by = serializers.CharField(help_text="The provider that serves it.")
    modality = serializers.ChoiceField(choices=Modality.choices)
    pattern = serializers.BooleanField()
    fallbacks = serializers.ListField(child=serializers.CharField())


class ModelListView(APIView):
    @extend_schema(
        summary="The models this key may use (OpenAI list format, plus modality and fallbacks)",
        responses=inline_serializer(
            "ModelList", {"object": serializers.CharField(), "data": ModelSerializer(many=True)}
        ),
    )
    def get(self, request: Request) -> Response:
        routes = [r for r in routing_table().routes if r.enabled and r.provider_enabled]
        data = [
            {
                "id": r.name,
                "object": "model",
                "created": 0,
                "owned_by": r.provider.name,
                "modality": r.modality,
                "pattern": r.is_pattern,
                "fallbacks": list(r.fallbacks),
            }
            for r in sorted(routes, key=lambda r: (r.is_pattern, r.name))
        ]
        return Response({"object": "list", "data": data})
