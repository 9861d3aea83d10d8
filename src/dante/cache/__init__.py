"""Teacher cache (stage 2): records, metadata, sharded resumable writer, validate/stats."""
