"""OpenAI-compatible API server (``llmtuner api``): FastAPI routes over the shared generation engine."""
