"""A request's life: creation, cancel and retry, image claims, finalizing, recovery, retention.

Each state change of a request or an image is one short unit of work with one commit, and a
conditional UPDATE, so running any of them twice (a redelivered task, two workers finishing at
once) changes nothing the second time.
"""
