"""Build tooling for glmv-portable: the portable llama.cpp build and the PyInstaller bundle."""
