"""Views that raise each class of error, to check they all answer with the envelope."""

from django.core.exceptions import PermissionDenied
from django.urls import include, path
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from pulse.urls import handler400, handler403, handler404, handler500  # noqa: F401 - used by Django
from pulse.urls import urlpatterns as pulse_urlpatterns


class Message(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()


class Body(serializers.Serializer):
    model = serializers.CharField()
    messages = Message(many=True)


class EchoView(APIView):
    permission_classes = [AllowAny]

    def post(self, request):
        body = Body(data=request.data)
        body.is_valid(raise_exception=True)
        return Response(body.validated_data)


class ForbiddenView(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        raise exceptions.PermissionDenied()


class DjangoForbiddenView(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        raise PermissionDenied()


class AlwaysThrottle(BaseThrottle):
    def allow_request(self, request, view):
        return False

    def wait(self):
        return 7


class ThrottledView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [AlwaysThrottle]

    def get(self, request):
        return Response({})


class BrokenView(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        raise RuntimeError("database password is hunter2")


def broken_plain_django_view(request):
    raise RuntimeError("database password is hunter2")


urlpatterns = [
    path("t/echo", EchoView.as_view()),
    path("t/forbidden", ForbiddenView.as_view()),
    path("t/django-forbidden", DjangoForbiddenView.as_view()),
    path("t/throttled", ThrottledView.as_view()),
    path("t/broken", BrokenView.as_view()),
    path("t/broken-plain", broken_plain_django_view),
    path("", include(pulse_urlpatterns)),
]
