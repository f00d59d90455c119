"""The environment `make dev` gives the handlers sends every AWS call they make to moto."""

from __future__ import annotations

import boto3
import pytest

from local.run import offline_environment
from wspush.tools.local import LocalStack


@pytest.mark.parametrize("service", ["dynamodb", "sqs", "ssm", "events"])
def test_every_aws_service_the_handlers_call_is_reached_at_moto(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the AWS settings make dev gives serverless-offline's handlers
    local = LocalStack(aws_port=45566, events_port=45567)
    for name, value in offline_environment(local, "none").items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    # When a handler makes a client for the service, as boto3 and pynamodb make it
    client = boto3.session.Session().client(service, region_name="us-east-1")
    # Then it goes to moto's server (EventBridge to its own), never to AWS (EventBridge's
    # variable is not named after the client: AWS_ENDPOINT_URL_EVENTBRIDGE, not ..._EVENTS)
    moto = local.events_endpoint if service == "events" else local.aws_endpoint
    assert client.meta.endpoint_url == moto
