"""``llmtuner webui``: a Gradio front end over the same configs and functions as the CLI.

The Train tab writes the YAML that ``llmtuner train`` runs and starts it in a subprocess; the other tabs call
the evaluation, chat and export functions of the library directly. Nothing here duplicates a rule of the CLI:
validation is the parser's, the first example is rendered by the data pipeline.
"""
