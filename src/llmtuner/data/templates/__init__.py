"""Chat templates as data. Import the public API from ``llmtuner.data.template``."""
