from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gateway import playground, usage_views, views
from gateway.jobs import views as job_views
from pulse.admin_site import too_many_login_attempts

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
    path("v1/jobs", job_views.JobListView.as_view(), name="jobs"),
    path("v1/jobs/<uuid:job_id>", job_views.JobView.as_view(), name="job"),
    path("v1/jobs/<uuid:job_id>/cancel", job_views.JobCancelView.as_view(), name="job-cancel"),
    path("v1/jobs/<uuid:job_id>/outputs/<int:index>", job_views.JobOutputView.as_view(), name="job-output"),
    path("v1/files/<str:token>", job_views.SignedFileView.as_view(), name="job-file"),
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
    path("playground/", playground.playground_view, name="playground"),
    path("playground/jobs/<uuid:job_id>", playground.playground_job_view, name="playground-job"),
    path(
        "playground/login/",
        playground.PlaygroundLoginView.as_view(too_many_attempts=too_many_login_attempts),
        name="playground-login",
    ),
    path("playground/logout/", LogoutView.as_view(next_page="playground-login"), name="playground-logout"),
    path("admin/", admin.site.urls),
]
