"""Drop-folder automation: job files submitted once, frame folders streamed to a post agent (docs/watcher.md)."""
