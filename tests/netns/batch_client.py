"""Run inside a rig namespace: submit many jobs to the coordinator there, report as they run, then each job.

    python -m tests.netns.batch_client ADDRESS TOKEN SPECS_JSON [--history]

SPECS_JSON is a list of job specs. Prints {"submitted": [ids]}, then (polling List, one call
every 0.2 s whatever the number of jobs) {"done": n, "running": {agent: count}} whenever
either changes, flushed, so a test can act mid-run (kill an agent that is busy); at the end
{"final": [job, ...]} with every submitted job once it has ended (with --history, each with
"messages": its events' messages, such as where a split ran).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from artifex_agent.cli.jobview import job_dict
from artifex_agent.client import JobsClient
from artifex_agent.jobspec import JobSpec
from artifex_agent.vocabulary import TERMINAL

POLL_S = 0.2


def main(argv: list[str]) -> int:
    address, token, specs = argv[0], argv[1], [JobSpec.from_dict(s) for s in json.loads(argv[2])]
    history = "--history" in argv[3:]
    with JobsClient(address, token) as client:
        ids = [client.submit(spec) for spec in specs]
        print(json.dumps({"submitted": ids}), flush=True)
        wanted, last = set(ids), None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            jobs = [j for j in client.list(limit=None) if j.id in wanted]
            done = sum(j.state in TERMINAL for j in jobs)
            running = dict(Counter(j.agent for j in jobs if j.state == "running" and j.agent))
            if (done, running) != last:
                print(json.dumps({"done": done, "running": running}), flush=True)
                last = (done, running)
            if done == len(wanted):
                final = [job_dict(client.get(i)) for i in ids]
                for job in final if history else []:
                    job["messages"] = [e.message for e in client.watch(job["id"], history=True, timeout=30)]
                print(json.dumps({"final": final}), flush=True)
                return 0
            time.sleep(POLL_S)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
