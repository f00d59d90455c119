"""wspush: push JSON messages from backend services to WebSocket clients on AWS."""
