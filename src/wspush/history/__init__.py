"""Recovery: streams with a position (``seq`` in an ``epoch``), the messages they keep, and
the replay of what a reconnecting client missed."""
