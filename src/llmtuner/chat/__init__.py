"""Using a trained model from the command line: the interactive chat (``cli_chat``), classifier and reward-model
prediction (``classify``, ``reward``) and the task test tool (``task_runner``).

Generation runs on the one engine in ``model/engine.py``, shared with the API server, the web UI and evaluation.
Importing this package stays free of torch; the heavy imports happen when a model is loaded.
"""
