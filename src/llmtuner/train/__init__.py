"""llmtuner.train"""
