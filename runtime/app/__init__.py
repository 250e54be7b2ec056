"""The faces: the command line, the local server (app API + OpenAI API), the desktop window, the self-test."""
