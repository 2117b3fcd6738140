"""The jobs API (DRF): list, get and cancel one's own jobs (staff: anyone's), and download outputs,
by the owner's key or by a signed URL. Another user's job or file is a 404, as if it did not exist."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.errors import ApiError, InvalidRequest, NotFound
from gateway.jobs import lifecycle
from gateway.jobs.serializers import JobSerializer
from gateway.jobs.storage import read_output_token
from gateway.models import Job, JobOutput


def base_url(request: Request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def render(request: Request, job: Job) -> dict[str, Any]:
    return JobSerializer(job, context={"base_url": base_url(request)}).data


def visible_jobs(request: Request) -> QuerySet[Job]:
    jobs = Job.objects.prefetch_related("outputs")
    return jobs if request.user.is_staff else jobs.filter(user_id=int(request.user.pk or 0))


def job_or_404(request: Request, job_id: str) -> Job:
    job = visible_jobs(request).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No job {job_id}.", code="job_not_found", param="id")
    return job


class NewestFirst(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"object": "list", "data": data, "next": self.get_next_link()})


class JobListView(APIView):
    @extend_schema(
        summary="Your jobs, newest first (staff: everyone's)",
        parameters=[
            OpenApiParameter("status", str, enum=Job.Status.values),
            OpenApiParameter("kind", str, enum=Job.Kind.values),
            OpenApiParameter("limit", int, description="Jobs per page, at most 100."),
            OpenApiParameter("cursor", str, description="From the previous page's `next`."),
        ],
        responses=JobSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        jobs = visible_jobs(request)
        for name, choices in (("status", Job.Status.values), ("kind", Job.Kind.values)):
            value = request.query_params.get(name)
            if value is None:
                continue
            if value not in choices:
                raise InvalidRequest(f"{name}: one of {', '.join(choices)}.", code="invalid_value", param=name)
            jobs = jobs.filter(**{name: value})
        paginator = NewestFirst()
        page = paginator.paginate_queryset(jobs, request, view=self) or []
        context = {"base_url": base_url(request)}
        return paginator.get_paginated_response(JobSerializer(page, many=True, context=context).data)


class JobView(APIView):
    @extend_schema(summary="One job", responses=JobSerializer)
    def get(self, request: Request, job_id: str) -> Response:
        return Response(render(request, job_or_404(request, str(job_id))))


class JobCancelView(APIView):
    @extend_schema(
        summary="Cancel a job (and its provider operation, where the provider allows it)",
        request=None,
        responses=JobSerializer,
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_or_404(request, str(job_id))
        canceled = lifecycle.cancel(job)
        job.refresh_from_db()
        if not canceled:  # it had finished, or did meanwhile
            raise ApiError(f"The job has already {job.status}.", status=409, code="job_finished")
        return Response(render(request, job))


def serve(output: JobOutput) -> FileResponse:
    response = FileResponse(output.file.open("rb"), content_type=output.content_type)
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response


class JobOutputView(APIView):
    @extend_schema(summary="Download one output of your job", responses={(200, "*/*"): OpenApiTypes.BINARY})
    def get(self, request: Request, job_id: str, index: int) -> FileResponse:
        job = job_or_404(request, str(job_id))
        output = job.outputs.filter(index=index).first()
        if output is None:
            raise NotFound(f"Job {job_id} has no output {index}.", code="output_not_found")
        return serve(output)


class SignedFileView(APIView):
    """The output URLs in job answers: the signature is the credential, so no key is asked for."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(summary="Download an output by its signed URL", responses={(200, "*/*"): OpenApiTypes.BINARY})
    def get(self, request: Request, token: str) -> FileResponse:
        found = read_output_token(token)
        output = JobOutput.objects.filter(job_id=found[0], index=found[1]).first() if found else None
        if output is None:
            raise NotFound("No such file, or its link has expired.", code="file_not_found")
        return serve(output)
