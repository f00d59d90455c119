"""Fan-out: resolving a message's audience, posting to it, re-queues and splits."""
