"""For developers and services: the wspush CLI, a listening client, the local stack's addresses."""
