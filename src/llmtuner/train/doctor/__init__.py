"""``llmtuner doctor``: checks, on a CPU and in minutes, that a config trains what its user means (docs/doctor.md)."""
