"""artifex-agent: two GPU PCs on one link as one small Wan2.2 video farm."""

__version__ = "0.1.0"
# Bumped when the wire contract changes incompatibly; peers with another major refuse.
# 2: codec, encoder, model kind, stage and job fields as enums (issue 12); the old string fields are reserved.
PROTOCOL_VERSION = 2
