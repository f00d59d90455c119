"""Where the local stack (``make dev``) listens: every address is on loopback.

Shared by the stack runner, the ``wspush`` CLI and the end-to-end tests. Each port can
be moved with an environment variable, so a test run can sit beside a running ``make dev``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

STAGE = "local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's account
HOST = "127.0.0.1"
# `make dev AUTH=jwt`: HS256 tokens with a secret made per run and kept in (moto's) SSM.
JWT_SECRET_PARAMETER = f"/wspush/{STAGE}/jwt-secret"
JWT_ISSUER = f"wspush-{STAGE}"
JWT_AUDIENCE = "wspush"
# The namespaces `make dev` declares, so examples and tests can rely on them: room (every
# connection, history), lobby (every connection, presence, history), secret (only through
# the token's channels claim or an authorizer, presence).
NAMESPACES = {
    "room": {"subscribe": "authenticated", "history": {"size": 100, "ttlSeconds": 86_400}},
    "lobby": {
        "subscribe": "authenticated",
        "presence": True,
        "history": {"size": 100, "ttlSeconds": 86_400},
    },
    "secret": {"subscribe": "restricted", "presence": True},
}


# user.online / user.offline go to the default bus of moto's events server; `make dev` adds a
# rule sending them to the events queue there, which `wspush events` reads.
EVENT_BUS = "default"
EVENTS_RULE = f"wspush-{STAGE}-events"


# Each port of the local stack and the environment variable that moves it.
PORT_VARIABLES = {
    "aws_port": "WSPUSH_LOCAL_AWS_PORT",
    "websocket_port": "WSPUSH_LOCAL_WEBSOCKET_PORT",
    "lambda_port": "WSPUSH_LOCAL_LAMBDA_PORT",
    "demo_port": "WSPUSH_LOCAL_DEMO_PORT",
    "events_port": "WSPUSH_LOCAL_EVENTS_PORT",
}


@dataclass(frozen=True)
class LocalStack:
    aws_port: int = 4566
    websocket_port: int = 3001
    lambda_port: int = 3002
    demo_port: int = 8080
    events_port: int = 4567

    @classmethod
    def from_env(cls) -> LocalStack:
        moved = {
            name: int(os.environ[variable])
            for name, variable in PORT_VARIABLES.items()
            if os.environ.get(variable)
        }
        return cls(**moved)

    def port_variables(self) -> dict[str, str]:
        """The environment that puts another process's ``from_env`` on these ports."""
        return {variable: str(getattr(self, name)) for name, variable in PORT_VARIABLES.items()}

    @property
    def aws_endpoint(self) -> str:
        """moto's server: DynamoDB, SQS and SSM."""
        return f"http://{HOST}:{self.aws_port}"

    @property
    def websocket_url(self) -> str:
        return f"ws://{HOST}:{self.websocket_port}"

    @property
    def management_endpoint(self) -> str:
        """serverless-offline's Management API (no stage in the path, unlike AWS)."""
        return f"http://{HOST}:{self.websocket_port}"

    @property
    def lambda_endpoint(self) -> str:
        """serverless-offline's Lambda Invoke API."""
        return f"http://{HOST}:{self.lambda_port}"

    @property
    def demo_url(self) -> str:
        return f"http://{HOST}:{self.demo_port}/"

    def queue_url(self, name: str) -> str:
        return f"{self.aws_endpoint}/{ACCOUNT_ID}/{name}"

    @property
    def messages_queue_url(self) -> str:
        return self.queue_url(f"wspush-{STAGE}-messages")

    @property
    def dead_letter_queue_url(self) -> str:
        return self.queue_url(f"wspush-{STAGE}-dead-letters")

    @property
    def events_endpoint(self) -> str:
        """A second moto server, in a process of its own: EventBridge and the events queue."""
        return f"http://{HOST}:{self.events_port}"

    @property
    def events_queue_url(self) -> str:
        """Where the local rule sends wspush's EventBridge events (``wspush events``)."""
        return f"{self.events_endpoint}/{ACCOUNT_ID}/wspush-{STAGE}-events"

    @property
    def table_name(self) -> str:
        return f"wspush-{STAGE}-connections"

    @property
    def processed_table_name(self) -> str:
        return f"wspush-{STAGE}-processed"

    @property
    def channels_table_name(self) -> str:
        return f"wspush-{STAGE}-channels"

    @property
    def history_table_name(self) -> str:
        return f"wspush-{STAGE}-history"

    @property
    def send_function_name(self) -> str:
        return f"wspush-{STAGE}-send"


def port_source(port: str) -> str:
    """How the local stack's ``port`` (a ``LocalStack`` field) was chosen, for error messages:
    the variable that moved it, or that it was not set."""
    variable = PORT_VARIABLES[port]
    value = os.environ.get(variable)
    if value:
        return f"port from {variable}={value}"
    return f"port {getattr(LocalStack(), port)}: {variable} is not set"
