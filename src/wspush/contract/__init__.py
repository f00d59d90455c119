"""The contract: what services send, what clients receive, what routes are given."""
