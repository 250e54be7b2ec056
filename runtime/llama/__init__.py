"""The llama.cpp binding: loading ggml's backends and CPU variants, the model pair (text + projector), memory policy, the quantizer call."""
