"""Inference on a trained model: the generation engine, the interactive chat, and the task test tool.

Importing this package stays free of torch; the heavy imports happen when a model is loaded.
"""
