"""Helpers for the tests, not tests: the transformers reference, the Xvfb display, the window driver."""
