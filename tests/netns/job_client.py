"""Run inside a rig namespace: submit one job to the coordinator there and print its events as they come.

    python -m tests.netns.job_client ADDRESS TOKEN SPEC_JSON

One JSON line per event (flushed: a test acts on them while the job runs, e.g. kills an
agent when the post stage has frames), then {"final": job} when the job has ended.
"""

from __future__ import annotations

import json
import sys

from artifex_agent.cli.jobview import job_dict
from artifex_agent.client import TERMINAL, JobsClient
from artifex_agent.jobspec import JobSpec


def main(argv: list[str]) -> int:
    address, token, spec = argv[0], argv[1], JobSpec.from_dict(json.loads(argv[2]))
    with JobsClient(address, token) as client:
        job_id = client.submit(spec)
        print(json.dumps({"job_id": job_id}), flush=True)
        while True:
            for event in client.watch(job_id, timeout=300):
                print(json.dumps({"kind": event.kind, "state": event.state, "stage": event.stage, "step": event.step,
                                  "total": event.total, "agent": event.agent, "message": event.message}), flush=True)
                if event.kind == "state" and event.state in TERMINAL:
                    break
            job = client.get(job_id)
            if job.terminal:
                print(json.dumps({"final": job_dict(job)}), flush=True)
                return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
