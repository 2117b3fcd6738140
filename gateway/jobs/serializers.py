"""A job as clients see it (DESIGN.md's shape), for the create endpoints and the jobs API alike."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.pricing import usd_text
from gateway.jobs.storage import output_token
from gateway.models import Job, JobOutput


def output_url(base_url: str, output: JobOutput) -> str:
    """The output's signed URL: works without the API key until it expires (JOB_OUTPUT_URL_TTL_S)."""
    return f"{base_url}/v1/files/{output_token(str(output.job_id), output.index)}"


class JobOutputSerializer(serializers.Serializer):
    url = serializers.SerializerMethodField(help_text="Signed, expiring download URL (default one hour).")
    content_type = serializers.CharField()
    bytes = serializers.IntegerField()

    def get_url(self, output: JobOutput) -> str:
        return output_url(self.context.get("base_url", ""), output)


class JobErrorSerializer(serializers.Serializer):
    type = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class JobUsageSerializer(serializers.Serializer):
    images = serializers.IntegerField(required=False)
    video_seconds = serializers.DecimalField(max_digits=10, decimal_places=3, required=False)


class JobSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    object = serializers.SerializerMethodField()
    kind = serializers.ChoiceField(choices=Job.Kind.choices)
    model = serializers.CharField()
    provider = serializers.CharField()
    status = serializers.ChoiceField(choices=Job.Status.choices)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = JobErrorSerializer(allow_null=True)
    outputs = JobOutputSerializer(many=True, source="outputs.all")
    usage = serializers.SerializerMethodField()
    cost_usd = serializers.SerializerMethodField()

    def get_object(self, job: Job) -> str:
        return "job"

    @extend_schema_field(JobUsageSerializer)
    def get_usage(self, job: Job) -> dict[str, Any]:
        if job.kind == Job.Kind.IMAGE:
            return {"images": job.images}
        return {"video_seconds": f"{job.video_seconds:.3f}"}

    def get_cost_usd(self, job: Job) -> str:
        return usd_text(job.cost_usd)
