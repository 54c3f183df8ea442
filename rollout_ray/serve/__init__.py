"""One model on Ray Serve behind an OpenAI-compatible API, shared by many jobs."""
