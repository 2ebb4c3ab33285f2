"""One job on two agents: expert split and CFG-parallel, bitwise equal to one uninterrupted run."""
