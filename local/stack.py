"""The stack's own definitions from serverless.yml, to create local copies of them.

``make dev`` and the tests build the connections table and the queues in moto from these
definitions rather than from a second description, so the code and the deployed resources
cannot drift apart unseen; the local Lambda runtime gives each function its timeout from
here too.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import yaml

SERVERLESS_YML = Path(__file__).resolve().parents[1] / "serverless.yml"
_SELF_REFERENCE = re.compile(r"\$\{self:([\w.]+)\}")


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation short tags (``!Ref``, ``!GetAtt``...) as their long form."""


def _intrinsic(loader: _TemplateLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def _configuration(stage: str) -> dict[str, Any]:
    """serverless.yml for ``stage``: the file is read every time (an edit shows at once), parsed
    once per content (every test's tables come from it); callers get their own copy."""
    text = SERVERLESS_YML.read_text().replace("${sls:stage}", stage)
    return copy.deepcopy(_parsed(text))


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> dict[str, Any]:
    loader = _TemplateLoader  # a SafeLoader subclass
    config: dict[str, Any] = yaml.load(text, Loader=loader)  # noqa: S506
    return config


def _resolve(config: dict[str, Any], text: str) -> str:
    """``text`` with its ``${self:...}`` references replaced by their values."""

    def lookup(match: re.Match[str]) -> str:
        value: Any = config
        for key in match.group(1).split("."):
            value = value[key]
        return str(value)

    return _SELF_REFERENCE.sub(lookup, text)


def resources(stage: str) -> dict[str, Any]:
    """serverless.yml's CloudFormation resources for ``stage``, ``${self:...}`` resolved."""
    config = _configuration(stage)
    stack: dict[str, Any] = json.loads(
        _resolve(config, json.dumps(config["resources"]["Resources"]))
    )
    return stack


# What the framework gives a function whose serverless.yml sets no timeout.
DEFAULT_TIMEOUT_SECONDS = 6


def function_timeouts(stage: str) -> dict[str, int]:
    """Each function's deployed name -> its timeout in seconds, as serverless.yml sets it."""
    config = _configuration(stage)
    default = config["provider"].get("timeout", DEFAULT_TIMEOUT_SECONDS)
    timeouts: dict[str, int] = {}
    for key, function in config["functions"].items():
        name = _resolve(config, function.get("name", f"{config['service']}-{stage}-{key}"))
        value = _resolve(config, str(function.get("timeout", default)))
        if not value.isdigit():
            raise ValueError(f"function {key}'s timeout cannot be read locally: {value!r}")
        timeouts[name] = int(value)
    return timeouts


def create_tables(dynamodb: Any, stage: str) -> dict[str, str]:
    """Create every DynamoDB table the stack defines; logical id -> table name."""
    names: dict[str, str] = {}
    for key, resource in resources(stage).items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        properties = resource["Properties"]
        options: dict[str, Any] = {}
        if indexes := properties.get("GlobalSecondaryIndexes"):
            options["GlobalSecondaryIndexes"] = indexes
        if stream := properties.get("StreamSpecification"):
            options["StreamSpecification"] = {"StreamEnabled": True, **stream}
        dynamodb.create_table(
            TableName=properties["TableName"],
            BillingMode=properties["BillingMode"],
            AttributeDefinitions=properties["AttributeDefinitions"],
            KeySchema=properties["KeySchema"],
            **options,
        )
        ttl = properties["TimeToLiveSpecification"]
        dynamodb.update_time_to_live(
            TableName=properties["TableName"],
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": ttl["Enabled"],
            },
        )
        names[key] = properties["TableName"]
    return names


# Queue properties with no local meaning: moto neither encrypts nor tags for real.
_NOT_EMULATED = frozenset(("QueueName", "Tags", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"))


def create_queues(sqs: Any, stage: str) -> dict[str, str]:
    """Create the stack's queues (dead-letter queues first); logical id -> queue URL.

    Every property becomes the queue attribute of the same name, so a property added to
    serverless.yml reaches the local queue too; one that cannot be reproduced here fails
    loudly rather than being dropped.
    """
    queues = {
        key: res["Properties"]
        for key, res in resources(stage).items()
        if res["Type"] == "AWS::SQS::Queue"
    }
    urls: dict[str, str] = {}
    for key in sorted(queues, key=lambda k: "RedrivePolicy" in queues[k]):
        properties = queues[key]
        attributes: dict[str, str] = {}
        for name, value in properties.items():
            if name in _NOT_EMULATED:
                continue
            if name == "RedrivePolicy":
                attributes[name] = json.dumps(_redrive_policy(sqs, value, urls))
            elif isinstance(value, bool):
                attributes[name] = "true" if value else "false"
            elif isinstance(value, str | int):
                attributes[name] = str(value)
            else:
                raise ValueError(f"{key}.{name} cannot be created locally: {value!r}")
        answer = sqs.create_queue(QueueName=properties["QueueName"], Attributes=attributes)
        urls[key] = answer["QueueUrl"]
    return urls


def _redrive_policy(sqs: Any, policy: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    target = policy["deadLetterTargetArn"]["Fn::GetAtt"][0]
    arn = sqs.get_queue_attributes(QueueUrl=urls[target], AttributeNames=["QueueArn"])
    return {**policy, "deadLetterTargetArn": arn["Attributes"]["QueueArn"]}


def stream_source(stage: str, function: str) -> dict[str, Any]:
    """The stream event source of ``function`` as serverless.yml declares it."""
    config = _configuration(stage)
    for event in config["functions"][function].get("events", []):
        if "stream" in event:
            source: dict[str, Any] = event["stream"]
            return source
    raise ValueError(f"function {function} has no stream event")
