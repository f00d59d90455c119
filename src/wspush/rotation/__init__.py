"""Rotation: asking each connection to reconnect before API Gateway's 2-hour cut."""
