"""The local server: the app API the window and browser use, the OpenAI-compatible API, its guard and socket."""
