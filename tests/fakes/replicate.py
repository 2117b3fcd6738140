"""Fake Replicate API: predictions (create, read, cancel) and the delivery host for their outputs.

Speaks the wire protocol in /work/shared/PROVIDERS.md. Strict like the real API: an unknown
model is a 404, an input its schema rejects a 422 with Replicate's validation body
(`detail` listing "- input.x: ..." lines, `invalid_fields`), a bad token a 401; errors are
RFC 7807 problem objects. Each model's schema is the one on its replicate.com API page.

A prediction follows a script, queued with finish_after / fail_prediction / cancel_upstream
and taken by the next predictions created, in order (default: it succeeds at once).
`polls` is how many reads still see it running: with `Prefer: wait` and 0 polls it is
answered finished (201); otherwise it is answered running (202 with `Prefer: wait`, else 201
"starting"). Outputs are served on a second port, the fake's delivery host, which refuses a
request carrying an Authorization header (the API token must never travel there).

    with FakeReplicate.start() as fake:
        fake.finish_after(polls=2)
        ...
        assert len(fake.predictions) == 1 and fake.cancels == []
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .openai import FAKE_PNG
from .server import FakeProvider, Fault, Received, new_id

NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."
SENSITIVE_ERROR = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32
OUTPUT_BYTES = {"mp4": (FAKE_MP4, "video/mp4"), "png": (FAKE_PNG, "image/png"), "jpg": (FAKE_PNG, "image/jpeg")}
CREATE_FIELDS = {"input", "version", "webhook", "webhook_events_filter", "stream"}
RUNNING = ("starting", "processing")
PROBLEMS = {
    400: ("Bad request", "The request could not be understood."),
    401: ("Unauthenticated", "You did not pass a valid authentication token"),
    402: ("Insufficient credit", "You have insufficient credit to run this model."),
    404: ("Not found", "The requested resource could not be found."),
    429: ("Request was throttled", "Request was throttled. Expected available in 1 second."),
    500: ("Internal server error", "An unexpected error occurred."),
    503: ("Service unavailable", "The service is temporarily unavailable. Please try again later."),
}
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


# ---- model schemas ------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One input of a model's schema."""

    kind: str  # string | integer | number | boolean
    required: bool = False
    enum: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class FakeModel:
    schema: dict[str, Field]
    version: str
    outputs: Callable[[dict[str, Any]], list[str]]  # the file names one prediction makes
    single_output: bool = False  # the output is one URI, not an array of them


FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
MODELS = {
    # replicate.com/black-forest-labs/flux-schnell/api
    "black-forest-labs/flux-schnell": FakeModel(
        {
            "prompt": Field("string", required=True),
            "aspect_ratio": Field("string", enum=FLUX_ASPECT_RATIOS),
            "num_outputs": Field("integer", minimum=1, maximum=4),
            "num_inference_steps": Field("integer", minimum=1, maximum=4),
            "seed": Field("integer"),
            "output_format": Field("string", enum=("webp", "jpg", "png")),
            "output_quality": Field("integer", minimum=0, maximum=100),
            "disable_safety_checker": Field("boolean"),
            "go_fast": Field("boolean"),
            "megapixels": Field("string", enum=("1", "0.25")),
        },
        "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e",  # the one on its API page
        lambda i: [f"out-{n}.{i.get('output_format', 'webp')}" for n in range(i.get("num_outputs", 1))],
    ),
    # replicate.com/kwaivgi/kling-v2.5-turbo-pro/api
    "kwaivgi/kling-v2.5-turbo-pro": FakeModel(
        {
            "prompt": Field("string", required=True),
            "negative_prompt": Field("string"),
            "start_image": Field("string"),
            "image": Field("string"),  # deprecated alias of start_image
            "aspect_ratio": Field("string", enum=("16:9", "9:16", "1:1")),
            "duration": Field("integer", enum=(5, 10)),
        },
        "a" * 64,  # synthetic: the fake's own version id
        lambda i: ["output.mp4"],
        single_output=True,
    ),
}


def json_type(value: Any) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), "object")


def field_errors(name: str, spec: Field, value: Any) -> list[dict[str, str]]:
    """What gojsonschema (behind Replicate's validation) says about one input value."""
    where = f"input.{name}"
    given = json_type(value)
    if not (given == spec.kind or (spec.kind == "number" and given == "integer")):
        return [
            {
                "type": "invalid_type",
                "field": where,
                "description": f"Invalid type. Expected: {spec.kind}, given: {given}",
            }
        ]
    if spec.enum and value not in spec.enum:
        options = ", ".join(json.dumps(option) for option in spec.enum)
        return [{"type": "enum", "field": where, "description": f"{name} must be one of the following: {options}"}]
    if spec.minimum is not None and value < spec.minimum:
        return [
            {"type": "number_gte", "field": where, "description": f"Must be greater than or equal to {spec.minimum:g}"}
        ]
    if spec.maximum is not None and value > spec.maximum:
        return [
            {"type": "number_lte", "field": where, "description": f"Must be less than or equal to {spec.maximum:g}"}
        ]
    return []


def input_errors(model: FakeModel, body: Any) -> list[dict[str, str]]:
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return [{"type": "required", "field": "(root)", "description": "input is required"}]
    errors = [
        {
            "type": "additional_property_not_allowed",
            "field": "(root)",
            "description": f"Additional property {key} is not allowed",
        }
        for key in sorted(set(body) - CREATE_FIELDS)
    ]
    given = body["input"]
    for name, spec in model.schema.items():
        if name in given:
            errors += field_errors(name, spec, given[name])
        elif spec.required:
            errors.append({"type": "required", "field": "input", "description": f"{name} is required"})
    return errors  # inputs the schema does not name are ignored, as the API does


def validation_problem(errors: list[dict[str, str]]) -> dict[str, Any]:
    detail = "".join(f"- {e['field']}: {e['description']}\n" for e in errors)
    return {"detail": detail, "status": 422, "title": "Input validation failed", "invalid_fields": errors}


def prefer_wait(header: str | None) -> int | None:
    """`Prefer: wait` (60 s) or `wait=N`, 1 <= N <= 60; None without one; ValueError if malformed."""
    if header is None:
        return None
    name, _, value = header.strip().partition("=")
    if name.strip() != "wait":
        raise ValueError(f"unsupported preference {header!r}")
    seconds = int(value) if value else 60
    if not 1 <= seconds <= 60:
        raise ValueError("wait must be between 1 and 60 seconds")
    return seconds


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# ---- predictions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the next prediction goes: reads that still see it running, then its end."""

    polls: int = 0
    outcome: str = "succeeded"  # succeeded | failed | canceled
    error: str | None = None


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    plan: Plan
    waited: bool  # created with Prefer: wait
    status: str = "starting"
    output: Any = None
    error: str | None = None
    polls: int = 0  # reads answered so far
    created_at: str = field(default_factory=now)
    completed_at: str | None = None


class FakeReplicate(FakeProvider):
    provider = "replicate"
    default_api_key = "r8_test_replicate_token"
    url_prefix = ""  # REPLICATE_BASE_URL has no /v1

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.delivery_port = 0
        self._state = threading.Lock()
        self._plans: list[Plan] = []
        self._predictions: dict[str, Prediction] = {}
        self._cancels: list[str] = []
        self._deliveries: list[Received] = []

    # ---- what the test sees and scripts ------------------------------------------------------

    def finish_after(self, polls: int, times: int = 1) -> None:
        """The next prediction(s) succeed once `polls` reads have seen them running."""
        self._plan(Plan(polls), times)

    def fail_prediction(self, error: str = "Prediction failed.", polls: int = 0, times: int = 1) -> None:
        """The next prediction(s) end failed with this error (NSFW_ERROR: the safety checker)."""
        self._plan(Plan(polls, "failed", error), times)

    def cancel_upstream(self, polls: int = 0, times: int = 1) -> None:
        """The next prediction(s) end canceled, as if someone canceled them on replicate.com."""
        self._plan(Plan(polls, "canceled"), times)

    @property
    def predictions(self) -> list[Prediction]:
        """Every prediction created, in order (copies: the fake goes on changing its own)."""
        with self._state:
            return copy.deepcopy(list(self._predictions.values()))

    @property
    def cancels(self) -> list[str]:
        """The prediction ids the cancel endpoint was called for."""
        with self._state:
            return list(self._cancels)

    @property
    def deliveries(self) -> list[Received]:
        """The requests the delivery host received (kept apart from `requests`, the API's)."""
        with self._state:
            return list(self._deliveries)

    @property
    def delivery_url(self) -> str:
        return f"http://127.0.0.1:{self.delivery_port}"

    def reset(self) -> None:
        super().reset()
        with self._state:
            self._plans.clear()
            self._predictions.clear()
            self._cancels.clear()
            self._deliveries.clear()

    def _plan(self, plan: Plan, times: int) -> None:
        with self._state:
            self._plans.extend([plan] * times)

    # ---- lifecycle: a second port for the delivery host ----------------------------------------

    async def _open(self, sock: socket.socket) -> None:
        await super()._open(sock)
        delivery = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        delivery.bind(("127.0.0.1", 0))
        self.delivery_port = delivery.getsockname()[1]
        assert self._runner is not None
        await web.SockSite(self._runner, delivery).start()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/models/{owner}/{name}/predictions", self.endpoint(self._create_for_model)),
            web.post("/v1/predictions", self.endpoint(self._create_for_version)),
            web.get("/v1/predictions/{id}", self.endpoint(self._read)),
            web.post("/v1/predictions/{id}/cancel", self.endpoint(self._cancel)),
            web.get("/delivery/{id}/{file}", self._deliver),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    # ---- errors and auth ---------------------------------------------------------------------

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        if body is None:
            title, detail = PROBLEMS.get(status, ("Error", f"HTTP {status}"))
            body = {"title": title, "detail": detail, "status": status}
        return web.json_response(body, status=status, headers=headers, content_type="application/problem+json")

    def auth_error(self, received: Received) -> web.Response | None:
        scheme, _, token = received.headers.get("authorization", "").partition(" ")
        if scheme in ("Bearer", "Token") and token.strip() == self.api_key:
            return None
        return self.error_response(401)

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.error_response(404)

    # ---- predictions ---------------------------------------------------------------------------

    async def _create_for_model(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        name = f"{request.match_info['owner']}/{request.match_info['name']}"
        model = MODELS.get(name)
        if model is None:
            return self.error_response(404)
        if isinstance(received.json, dict) and "version" in received.json:
            problem = validation_problem(
                [
                    {
                        "type": "additional_property_not_allowed",
                        "field": "(root)",
                        "description": "Additional property version is not allowed",
                    }
                ]
            )
            return self.error_response(422, problem)
        return self._create(name, model, received)

    async def _create_for_version(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        version = received.json.get("version") if isinstance(received.json, dict) else None
        found = [(name, model) for name, model in MODELS.items() if model.version == str(version).rpartition(":")[2]]
        if not found:
            return self.error_response(
                422,
                {
                    "title": "Invalid version or not permitted",
                    "detail": "The specified version does not exist (or perhaps you don't have permission to use it?)",
                    "status": 422,
                },
            )
        return self._create(*found[0], received)

    def _create(self, name: str, model: FakeModel, received: Received) -> web.Response:
        errors = input_errors(model, received.json)
        if errors:
            return self.error_response(422, validation_problem(errors))
        try:
            wait = prefer_wait(received.headers.get("prefer"))
        except ValueError as exc:
            return self.error_response(400, {"title": "Invalid Prefer header", "detail": str(exc), "status": 400})
        with self._state:
            plan = self._plans.pop(0) if self._plans else Plan()
            prediction = Prediction(new_id(""), name, model.version, received.json["input"], plan, wait is not None)
            self._predictions[prediction.id] = prediction
            if wait is not None and plan.polls == 0:
                self._end(prediction, model)
            elif wait is not None:
                prediction.status = "processing"  # it ran for the whole wait
            answer = self._as_json(prediction)
        ready = prediction.status not in RUNNING
        return web.json_response(answer, status=202 if wait is not None and not ready else 201)

    async def _read(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        with self._state:
            prediction = self._predictions.get(request.match_info["id"])
            if prediction is None:
                return self.error_response(404)
            if prediction.status in RUNNING:
                prediction.polls += 1
                if prediction.polls > prediction.plan.polls:
                    self._end(prediction, MODELS[prediction.model])
                else:
                    prediction.status = "processing"
            answer = self._as_json(prediction)
        return web.json_response(answer)

    async def _cancel(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        with self._state:
            prediction = self._predictions.get(request.match_info["id"])
            if prediction is None:
                return self.error_response(404)
            self._cancels.append(prediction.id)
            if prediction.status in RUNNING:  # canceling a finished prediction changes nothing
                prediction.status, prediction.completed_at = "canceled", now()
            answer = self._as_json(prediction)
        return web.json_response(answer)

    def _end(self, prediction: Prediction, model: FakeModel) -> None:
        """Finish a prediction as its plan says (the caller holds the state lock)."""
        prediction.status, prediction.completed_at = prediction.plan.outcome, now()
        if prediction.plan.outcome == "failed":
            prediction.error = prediction.plan.error
        elif prediction.plan.outcome == "succeeded":
            urls = [f"{self.delivery_url}/delivery/{prediction.id}/{file}" for file in model.outputs(prediction.input)]
            prediction.output = urls[0] if model.single_output else urls

    def _as_json(self, prediction: Prediction) -> dict[str, Any]:
        api = f"{self.base_url}/v1/predictions/{prediction.id}"
        done = prediction.status not in RUNNING
        return {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version,
            "input": prediction.input,
            "logs": "",
            "output": prediction.output,
            "data_removed": False,
            "error": prediction.error,
            "status": prediction.status,
            "source": "api",
            "created_at": prediction.created_at,
            "started_at": prediction.created_at if prediction.status != "starting" else None,
            "completed_at": prediction.completed_at,
            "urls": {"cancel": f"{api}/cancel", "get": api, "web": f"https://replicate.com/p/{prediction.id}"},
            "metrics": {"predict_time": 1.25} if done and prediction.status == "succeeded" else {},
        }

    # ---- the delivery host -----------------------------------------------------------------------

    async def _deliver(self, request: web.Request) -> web.Response:
        received = Received(
            request.method, request.path, dict(request.query), {k.lower(): v for k, v in request.headers.items()}, None
        )
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname or sockname[1] != self.delivery_port:
            return self.error_response(404)  # outputs are on the delivery host only
        with self._state:
            self._deliveries.append(received)
            prediction = self._predictions.get(request.match_info["id"])
        if "authorization" in received.headers:
            # As storage answers a signed link sent with a second credential. Pulse's token must not come here.
            return web.Response(status=400, text="Only one auth mechanism allowed; no Authorization header here")
        if prediction is None or prediction.output is None:
            return web.Response(status=404, text="Not Found")
        data, kind = OUTPUT_BYTES.get(request.match_info["file"].rpartition(".")[2], (FAKE_PNG, "image/webp"))
        return web.Response(body=data, content_type=kind)
