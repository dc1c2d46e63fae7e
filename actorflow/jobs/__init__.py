"""Jobs: programs handed to a running cluster (``af.JobClient``, ``actorflow job ...``).

The head runs a ``jobs`` actor (:mod:`actorflow.jobs.manager`, a head service) that starts
each job's entrypoint as a driver process and keeps its output; :class:`JobClient` talks to
it over the cluster's authenticated link. Runtime environments (``working_dir``,
``py_modules``, ``env_vars``) are packed and shipped by :mod:`actorflow.cluster.runtime_env`.
"""

from actorflow.jobs.client import JobClient

__all__ = ["JobClient"]
