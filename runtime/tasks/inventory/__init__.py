"""The inventory: many nameplate photos queued, read one after another (by the local model or a
remote OpenAI-compatible engine), kept in a store that survives a kill, checked and corrected by
the technician, exported. ``store`` owns what is kept, ``queue`` the reading, ``intake`` a photo's
way in, ``export`` the way out, ``remote`` the remote engine."""
