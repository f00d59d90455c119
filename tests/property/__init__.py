"""Property-based tests: hostile input never crashes wspush and always gets its specific answer."""
