"""JSON Schemas of what services send wspush and what clients receive; ``generate`` writes them."""
