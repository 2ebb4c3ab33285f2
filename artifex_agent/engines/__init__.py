"""Generation, upscale and encode engines: plain Python and torch, no gRPC inside."""
