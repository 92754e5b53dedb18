"""llmtuner.data.preprocess"""
