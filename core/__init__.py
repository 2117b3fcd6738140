"""Pulse's bottom layer: what every app uses and nothing above it may be imported from here.

Event-loop helpers (loops), the Redis and PostgreSQL pools (redis, pg), versioned snapshots
(snapshot), request ids, logging and metrics (observability), who a request acts for
(principal, caps), the modalities (modality), domain errors (errors) and shutdown hooks
(shutdown). Layers, lowest first: core <- providers <- billing <- gateway <- pulse (the
project package); `make lint` checks that imports only point down.
"""
