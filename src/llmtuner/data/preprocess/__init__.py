"""Tokenisation of converted conversations for each stage."""
