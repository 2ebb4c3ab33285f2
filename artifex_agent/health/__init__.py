"""`artifex-agent health`: checks of the agents, the link between them and this PC, with what to do."""
