"""The coordinator's web page: queue, submit, jobs, agents and gallery (docs/web.md)."""
