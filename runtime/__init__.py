"""glmv-portable runtime: GLM-4.6V-Flash through llama.cpp (CLI, local API, desktop UI)."""

__version__ = "0.1.0"
