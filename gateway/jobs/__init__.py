"""Media jobs: image and video generations that Celery workers run.

requests    parsing and per-model checks of /v1/images/generate and /v1/video/generate
lifecycle   the job row's states: created with its budget hold, leased to one worker at a
            time, finished once (ledger row and final state in one transaction), canceled
runner      what a worker does with a job: generate images, or start, poll and extend a video
storage     outputs copied into Pulse's storage, and the signed URLs that serve them
tasks       the Celery tasks (run a job, cancel upstream, reap stuck jobs)
consumers   the two create endpoints (Prefer: wait); views: the jobs API and the file URLs
"""
