"""Secrets the Lambdas read at run time: the only module calling SSM and Secrets Manager."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from wspush.errors import WspushError

# Bounded well inside $connect's 10 s: 2 attempts of at most 1 s + 2 s.
_CONFIG = Config(
    connect_timeout=1, read_timeout=2, retries={"mode": "standard", "total_max_attempts": 2}
)


class SecretUnavailable(WspushError):
    """A secret could not be read (missing, access denied, service unreachable)."""


def parameter(
    name: str,
    *,
    region: str,
    endpoint_url: str | None = None,
    session: boto3.session.Session | None = None,
) -> str:
    """A decrypted SSM Parameter Store value (SecureString or String)."""
    client: Any = (session or boto3.session.Session()).client(
        "ssm", region_name=region, endpoint_url=endpoint_url, config=_CONFIG
    )
    try:
        answer = client.get_parameter(Name=name, WithDecryption=True)
    except (ClientError, BotoCoreError) as exc:
        raise SecretUnavailable(f"could not read SSM parameter {name}") from exc
    value: str = answer["Parameter"]["Value"]
    return value


def secret(arn: str, *, region: str) -> str:
    """A Secrets Manager secret's string value."""
    client: Any = boto3.session.Session().client(
        "secretsmanager", region_name=region, config=_CONFIG
    )
    try:
        answer = client.get_secret_value(SecretId=arn)
    except (ClientError, BotoCoreError) as exc:
        raise SecretUnavailable("could not read the Secrets Manager secret") from exc
    value: str | None = answer.get("SecretString")
    if not value:
        raise SecretUnavailable("the Secrets Manager secret has no string value")
    return value
