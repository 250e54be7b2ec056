"""The engine: model files and where they are, images, prompts, sampling, grammar, generation, sessions with their caches."""
