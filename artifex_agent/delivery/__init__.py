"""Deliver: generate on this agent and hand each job's frames straight to its post agent.

The coordinator (and direct-mode `submit`) asks the generating agent to deliver; the frames go
from this agent to the post agent named in the cluster file over one PostProcess stream
(remote.py), or stay in this process when this agent post-processes them itself (local.py).
The caller sees progress and results only. What a delivery needs again after its post agent
failed is kept for a while (held.py), so the post stage is retried without generating again.
"""
