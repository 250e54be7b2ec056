"""Use cases every face calls: read-plate (prompt, grammar, parse, checks, the readings log)."""
