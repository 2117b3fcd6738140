"""The one request pipeline: admission, then candidates, budget, moderation, fallback and metering.

    admission = await admit(headers)                                  # key and rate limit
    context = RequestContext(admission.principal, request_id, endpoint)
    answer = await run(context, ChatCompletion(call))                 # or ImageGeneration(...)
    async with open_stream(context, ChatStreaming(call)) as stream:
        async for delta in stream: ...                                # billed as it ends

Modules: admission (key, rate limit), operations (what differs per operation), candidates
(planning and the fallback loop), meter (budget hold and the ledger row), run (the sequence
and the outcome policy).
"""

from gateway.pipeline.admission import Admission, admit
from gateway.pipeline.candidates import Attempt, plan_candidates, try_candidates
from gateway.pipeline.meter import Billed, Meter, RequestContext
from gateway.pipeline.operations import (
    ChatCompletion,
    ChatStreaming,
    ImageGeneration,
    Operation,
    VideoGeneration,
    VideoStarted,
)
from gateway.pipeline.run import (
    Answer,
    MeteredStream,
    Prepared,
    StreamInterrupted,
    finish,
    open_stream,
    prepare,
    record_failure,
    run,
)

__all__ = [
    "Admission",
    "Answer",
    "Attempt",
    "Billed",
    "ChatCompletion",
    "ChatStreaming",
    "ImageGeneration",
    "Meter",
    "MeteredStream",
    "Operation",
    "RequestContext",
    "StreamInterrupted",
    "VideoGeneration",
    "VideoStarted",
    "Prepared",
    "admit",
    "finish",
    "prepare",
    "record_failure",
    "open_stream",
    "plan_candidates",
    "run",
    "try_candidates",
]
