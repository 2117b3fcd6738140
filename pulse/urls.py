from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gateway import usage_views, views

handler400 = "gateway.errors.bad_request_view"
handler403 = "gateway.errors.permission_denied_view"
handler404 = "gateway.errors.not_found_view"
handler500 = "gateway.errors.server_error_view"

urlpatterns = [
    path("healthz", views.HealthView.as_view(), name="healthz"),
    path("readyz", views.ReadyView.as_view(), name="readyz"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("v1/models", views.ModelListView.as_view(), name="models"),
    path("v1/usage", usage_views.UsageView.as_view(), name="usage"),
    path("v1/usage/export.csv", usage_views.UsageExportView.as_view(), name="usage-export"),
    path(
        "v1/schema/",
        SpectacularAPIView.as_view(urlconf="gateway.schema", permission_classes=[], authentication_classes=[]),
        name="schema",
    ),
    path(
        "v1/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[], authentication_classes=[]),
        name="docs",
    ),
    path("admin/", admin.site.urls),
]
