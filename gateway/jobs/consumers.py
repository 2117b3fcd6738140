"""POST /v1/images/generate and /v1/video/generate: create a job and answer 202 with it; with
`Prefer: wait=N`, wait up to N seconds (at most JOB_MAX_WAIT_S) on the event loop, holding no thread,
and answer 200 if it finished by then."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from gateway.consumers import JsonApiConsumer
from gateway.jobs.requests import JobOperation, parse_image, parse_video
from gateway.jobs.serializers import JobSerializer
from gateway.jobs.services import preferred_wait, submit, wait_for
from gateway.models import Job
from gateway.pipeline import admit


class JobCreateConsumer(JsonApiConsumer):
    def parse(self, body: Any) -> JobOperation:
        raise NotImplementedError

    async def _handle(self, body: bytes) -> int:
        self._require_post()
        admission = await admit(self.headers)
        self.common_headers.update(admission.headers)
        operation = self.parse(self._json(body))
        job = await submit(operation, admission.principal, self.path)
        headers = {"Location": f"/v1/jobs/{job.pk}"}
        wait = preferred_wait(self.headers.get("prefer", ""), settings.JOB_MAX_WAIT_S)
        if wait is not None:
            job = await wait_for(job, wait)
            headers["Preference-Applied"] = f"wait={wait:g}"
        status = 200 if job.is_finished else 202
        await self._send_json(status, await database_sync_to_async(self._render)(job), headers)
        return status

    def _render(self, job: Job) -> dict[str, Any]:
        job = Job.objects.prefetch_related("outputs").get(pk=job.pk)
        scheme = "https" if self.scope.get("scheme") == "https" else "http"
        host = self.headers.get("host", "localhost")
        return JobSerializer(job, context={"base_url": f"{scheme}://{host}"}).data


class ImageGenerateConsumer(JobCreateConsumer):
    path = "/v1/images/generate"

    def parse(self, body: Any) -> JobOperation:
        return parse_image(body)


class VideoGenerateConsumer(JobCreateConsumer):
    path = "/v1/video/generate"

    def parse(self, body: Any) -> JobOperation:
        return parse_video(body)


JOB_CONSUMERS: tuple[type[JobCreateConsumer], ...] = (ImageGenerateConsumer, VideoGenerateConsumer)
