"""Stand-ins for what has no local stand-in (API Gateway's management API, a JWKS endpoint...).

SHUTDOWN_POLL_SECONDS: how often a fake's server loop checks whether it was asked to stop
(the standard library's 0.5 s would add half a second to the end of every test session).
"""

SHUTDOWN_POLL_SECONDS = 0.02
