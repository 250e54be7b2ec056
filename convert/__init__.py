"""Hugging Face GLM-4.6V checkpoint → GGUF (text model + mmproj), and the synthetic checkpoint."""
