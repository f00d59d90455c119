"""What `sls package` builds: a valid, least-privilege stack and a zip Lambda (arm64) can import.

One `npx sls package --stage test` per module run, in a clean copy of the service (as a fresh
checkout would be) with an empty pip download cache. Slow and needs npm deps and PyPI access,
hence the `packaging` marker.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import cfnlint
import pytest

from bench.package_size import HMAC_AUTH_PARAMS, PackagingRefused, package_clean_copy

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
STAGE = "test"
SERVICE = "wspush"
# About half of it is the bytecode caches that spare each cold start compiling every module.
MAX_ZIP_BYTES = 5 * 1024 * 1024
EM_X86_64 = 62
EM_AARCH64 = 183

FUNCTIONS = {
    "connect": "handlers/connect.handler",
    "disconnect": "handlers/disconnect.handler",
    "ping": "handlers/ping.handler",
    "default": "handlers/default.handler",
    "send": "handlers/send.handler",
    "sender": "handlers/sender.handler",
    "channel": "handlers/channel.handler",
    "welcome": "handlers/welcome.handler",
    "lifecycle": "handlers/lifecycle.handler",
    "rotation": "handlers/rotation.handler",
}

# The Lambda runtime's boto3 and everything it needs (top-level names in site-packages).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3")

# IAM grants as (action, resource) pairs; resources rendered by `render` below.
TABLE = "${ConnectionsTable.Arn}"
BY_USER_INDEX = "${ConnectionsTable.Arn}/index/byUser"
BY_ROTATION_INDEX = "${ConnectionsTable.Arn}/index/byRotation"
MESSAGES_QUEUE = "${MessagesQueue.Arn}"
DEAD_LETTER_QUEUE = "${DeadLetterQueue.Arn}"
POST_TO_CONNECTIONS = (
    "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
    f"${{WebsocketsApi}}/{STAGE}/POST/@connections/*"
)
PROCESSED = "${ProcessedMessagesTable.Arn}"
CHANNELS = "${ChannelsTable.Arn}"
HISTORY = "${HistoryTable.Arn}"
# Appending to a stream (a transaction of puts, after reading the head or the message's id).
APPEND_HISTORY = {("dynamodb:GetItem", HISTORY), ("dynamodb:PutItem", HISTORY)}
# Positions (a head started on first use) and replays (a Query over a span).
READ_HISTORY = APPEND_HISTORY | {("dynamodb:Query", HISTORY)}
BY_CONNECTION_INDEX = "${ChannelsTable.Arn}/index/byConnection"
STREAM = "${ConnectionsTable.StreamArn}"
EVENT_BUS = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"
DATA_KEY = "${DataKey.Arn}"
KMS_FAMILIES = {"kms:GenerateDataKey*", "kms:ReEncrypt*"}
# Every caller of the (key-encrypted) tables may use the key, through DynamoDB only.
TABLE_KEY_GRANTS = {
    (action, DATA_KEY)
    for action in (
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey*",
        "kms:ReEncrypt*",
        "kms:DescribeKey",
    )
}
ENCRYPTED_WITH_DATA_KEY = {
    "SSEEnabled": True,
    "SSEType": "KMS",
    "KMSMasterKeyId": {"Ref": "DataKey"},
}
DELIVERY_GRANTS = {
    ("dynamodb:Query", BY_USER_INDEX),
    ("dynamodb:Scan", TABLE),
    ("dynamodb:BatchGetItem", TABLE),
    ("dynamodb:GetItem", TABLE),
    ("dynamodb:BatchWriteItem", TABLE),
    ("dynamodb:GetItem", PROCESSED),
    ("dynamodb:PutItem", PROCESSED),
    ("dynamodb:UpdateItem", PROCESSED),
    ("dynamodb:DeleteItem", PROCESSED),
    ("execute-api:ManageConnections", POST_TO_CONNECTIONS),
    ("dynamodb:Query", CHANNELS),
    *APPEND_HISTORY,
    *TABLE_KEY_GRANTS,
}
# Subscriptions and members, written in transactions.
CHANNEL_WRITES = {
    (action, CHANNELS)
    for action in (
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
    )
}
# Presence events go to the channel through the (key-encrypted) queue.
QUEUE_PRESENCE_EVENTS = {
    ("sqs:SendMessage", MESSAGES_QUEUE),
    ("kms:Decrypt", DATA_KEY),
    ("kms:GenerateDataKey", DATA_KEY),
}
JWT_SECRET_PARAMETER = (
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${JwtSecretParameter}"
)
FUNCTION_GRANTS = {
    # (the secret grants exist only when a secret is configured: see Fn::If below)
    "connect": {
        ("dynamodb:PutItem", TABLE),
        ("dynamodb:DeleteItem", TABLE),
        *TABLE_KEY_GRANTS,
        ("ssm:GetParameter", JWT_SECRET_PARAMETER),
        ("secretsmanager:GetSecretValue", "${JwtSecretArn}"),
    },
    "disconnect": {("dynamodb:DeleteItem", TABLE), *TABLE_KEY_GRANTS},
    "ping": {("dynamodb:UpdateItem", TABLE), *TABLE_KEY_GRANTS},
    "default": set(),
    "send": DELIVERY_GRANTS,
    "sender": DELIVERY_GRANTS
    | {
        ("dynamodb:DescribeTable", TABLE),
        ("sqs:ReceiveMessage", MESSAGES_QUEUE),
        ("sqs:DeleteMessage", MESSAGES_QUEUE),
        ("sqs:GetQueueAttributes", MESSAGES_QUEUE),
        ("sqs:SendMessage", MESSAGES_QUEUE),
        ("sqs:SendMessage", DEAD_LETTER_QUEUE),
        ("kms:Decrypt", DATA_KEY),
        ("kms:GenerateDataKey", DATA_KEY),
    },
    # (the authorizer grant exists only when one is configured: Fn::If)
    "channel": {
        ("dynamodb:GetItem", TABLE),
        ("dynamodb:UpdateItem", TABLE),
        *CHANNEL_WRITES,
        *READ_HISTORY,
        *TABLE_KEY_GRANTS,
        *QUEUE_PRESENCE_EVENTS,
        ("lambda:InvokeFunction", "${ChannelAuthorizerArn}"),
        ("execute-api:ManageConnections", POST_TO_CONNECTIONS),  # a replay, to itself
    },
    "welcome": {
        ("dynamodb:GetItem", TABLE),
        *READ_HISTORY,
        *TABLE_KEY_GRANTS,
        ("execute-api:ManageConnections", POST_TO_CONNECTIONS),  # a replay, to itself
    },
    "lifecycle": {
        ("dynamodb:DescribeStream", STREAM),
        ("dynamodb:GetRecords", STREAM),
        ("dynamodb:GetShardIterator", STREAM),
        ("dynamodb:ListStreams", STREAM),
        *CHANNEL_WRITES,
        ("dynamodb:Query", BY_CONNECTION_INDEX),
        *TABLE_KEY_GRANTS,
        *QUEUE_PRESENCE_EVENTS,
        ("events:PutEvents", EVENT_BUS),
    },
    # Reads the connections due from the keys-only index (nothing else of the table),
    # remembers the buckets it queued, and queues the reconnect messages.
    "rotation": {
        ("dynamodb:Query", BY_ROTATION_INDEX),
        ("dynamodb:GetItem", PROCESSED),
        ("dynamodb:PutItem", PROCESSED),
        ("dynamodb:UpdateItem", PROCESSED),
        ("dynamodb:DeleteItem", PROCESSED),
        *TABLE_KEY_GRANTS,
        *QUEUE_PRESENCE_EVENTS,
    },
}

HANDLER_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "WSPUSH_TABLE_NAME": "t",
    "WSPUSH_QUEUE_URL": "http://localhost/q",
    "WSPUSH_DLQ_URL": "http://localhost/dlq",
    "WSPUSH_MANAGEMENT_ENDPOINT": "http://localhost:1",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
# Runs in a fresh `python -I -S -B`: nothing but the artifact, boto3 and the stdlib is importable.
IMPORT_HANDLER = """
import importlib, sys
artifact, runtime_libs, handler = sys.argv[1:4]
compiled = []
def compiles(event, args):
    # Importing a module with no usable cache compiles its source: /var/task is read-only,
    # so Lambda would do that at every cold start.
    if event == "compile" and str(args[1]).startswith(artifact):
        compiled.append(str(args[1]))
sys.addaudithook(compiles)
sys.path[:0] = [artifact, runtime_libs]
module_path, _, attr = handler.rpartition(".")
module = importlib.import_module(module_path.replace("/", "."))
if not callable(getattr(module, attr, None)):
    sys.exit(f"{handler}: no callable {attr!r}")
roots = (artifact, runtime_libs, *sys.path[2:])
strays = sorted(
    f"{name}: {mod.__file__}"
    for name, mod in list(sys.modules.items())
    if getattr(mod, "__file__", None) and not mod.__file__.startswith(roots)
)
if strays:
    sys.exit("imported from outside the artifact, boto3 and stdlib:\\n" + "\\n".join(strays))
if compiled:
    sys.exit("compiled from source, no usable cache in the zip:\\n" + "\\n".join(compiled))
"""


@dataclass(frozen=True)
class Package:
    template: dict[str, Any]
    template_path: Path
    zip_path: Path
    output: str

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {key: res for key, res in self.resources.items() if res["Type"] == kind}

    def function(self, name: str) -> dict[str, Any]:
        """The AWS::Lambda::Function resource of a serverless.yml function."""
        wanted = f"{SERVICE}-{STAGE}-{name}"
        matches = [
            res
            for res in self.of_type("AWS::Lambda::Function").values()
            if res["Properties"]["FunctionName"] == wanted
        ]
        assert len(matches) == 1, f"expected one function named {wanted}"
        return matches[0]

    def role_of(self, name: str) -> str:
        role = self.function(name)["Properties"]["Role"]
        assert set(role) == {"Fn::GetAtt"}, f"{name}: role must be a role of this stack: {role}"
        logical_id: str = role["Fn::GetAtt"][0]
        return logical_id

    def log_group_of(self, name: str) -> str:
        log_group = f"/aws/lambda/{SERVICE}-{STAGE}-{name}"
        matches = [
            key
            for key, res in self.of_type("AWS::Logs::LogGroup").items()
            if res["Properties"]["LogGroupName"] == log_group
        ]
        assert len(matches) == 1, f"expected one log group {log_group}"
        return matches[0]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """Given a clean copy of the service and an empty pip cache, `sls package` runs once."""
    cache = tmp_path_factory.mktemp("requirements-cache")
    packaged = package_clean_copy(
        tmp_path_factory.mktemp("packaging"),
        stage=STAGE,
        params=HMAC_AUTH_PARAMS,
        env={"WSPUSH_REQUIREMENTS_CACHE": str(cache)},
    )
    template_path = packaged.directory / "cloudformation-template-update-stack.json"
    return Package(
        template=json.loads(template_path.read_text()),
        template_path=template_path,
        zip_path=packaged.directory / f"{SERVICE}.zip",
        output=packaged.output,
    )


@pytest.fixture(scope="module")
def artifact(package: Package, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip unpacked as Lambda would unpack it into /var/task."""
    target = tmp_path_factory.mktemp("artifact")
    with zipfile.ZipFile(package.zip_path) as archive:
        archive.extractall(target)
    return target


@pytest.fixture(scope="module")
def runtime_libs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only boto3 and its dependencies, as the Lambda runtime provides."""
    site_packages = Path(boto3.__file__).resolve().parents[1]
    target = tmp_path_factory.mktemp("runtime-libs")
    for name in RUNTIME_PROVIDED:
        (target / name).symlink_to(site_packages / name)
    return target


def render(value: Any) -> str:
    """A CloudFormation value as one comparable string: GetAtt and Ref in ${...} form."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::GetAtt":
            parts = argument.split(".", 1) if isinstance(argument, str) else argument
            return "${" + ".".join(parts) + "}"
        if function == "Ref":
            return "${" + str(argument) + "}"
        if function == "Fn::Sub" and isinstance(argument, str):
            return argument
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(render(part) for part in parts)
    raise AssertionError(f"cannot render {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def unconditional(statement: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A statement, or the statement an ``Fn::If`` yields when its condition holds."""
    if set(statement) == {"Fn::If"}:
        condition, when_true, when_false = statement["Fn::If"]
        assert condition in {"HasJwtSecretParameter", "HasJwtSecretArn", "HasChannelAuthorizer"}, (
            statement
        )
        assert when_false == {"Ref": "AWS::NoValue"}, statement
        yield when_true
    else:
        yield statement


def statements(package: Package, role: str) -> Iterator[dict[str, Any]]:
    """Every policy statement a role gets: inline policies and policies attached to it."""
    properties = package.resources[role]["Properties"]
    for policy in properties.get("Policies", []):
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            yield from unconditional(statement)
    for res in package.resources.values():
        if res["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            attached = [render(ref) for ref in res["Properties"].get("Roles", [])]
            if f"${{{role}}}" in attached:
                yield from as_list(res["Properties"]["PolicyDocument"]["Statement"])


def grants(package: Package, role: str) -> set[tuple[str, str]]:
    pairs = set()
    for statement in statements(package, role):
        assert statement["Effect"] == "Allow", statement
        assert {"Action", "Resource"} <= statement.keys(), f"{role}: no Not*: {statement}"
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                pairs.add((action, render(resource)))
    return pairs


def every_statement(package: Package) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, res in package.resources.items():
        if res["Type"] == "AWS::IAM::Role":
            for policy in res["Properties"].get("Policies", []):
                for statement in as_list(policy["PolicyDocument"]["Statement"]):
                    for each in unconditional(statement):
                        yield key, each
        elif res["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            for statement in as_list(res["Properties"]["PolicyDocument"]["Statement"]):
                yield key, statement


# --- the template ----------------------------------------------------------------------------


def test_cfn_lint_finds_nothing(package: Package) -> None:
    # Given the packaged template
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    # When cfn-lint checks it (W3005: redundant DependsOn the framework writes)
    result = subprocess.run(
        [cfn_lint, str(package.template_path), "--ignore-checks", "W3005"],
        capture_output=True,
        text=True,
        check=False,
    )
    # Then it reports nothing
    assert result.returncode == 0, result.stdout + result.stderr


def test_packaging_prints_no_warnings(package: Package) -> None:
    # Given the CLI's output  /  Then it carries no warning or deprecation
    warnings = re.findall(r"(?im)^.*(?:warning|deprecat).*$", package.output)
    assert not warnings, package.output


def test_functions_are_the_handlers_of_the_service(package: Package) -> None:
    # Given the packaged functions  /  Then each handler is the one serverless.yml names
    handlers = {
        res["Properties"]["FunctionName"]: res["Properties"]["Handler"]
        for res in package.of_type("AWS::Lambda::Function").values()
    }
    assert handlers == {f"{SERVICE}-{STAGE}-{name}": path for name, path in FUNCTIONS.items()}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_runs_python313_on_arm64_with_tracing(package: Package, name: str) -> None:
    properties = package.function(name)["Properties"]
    assert properties["Runtime"] == "python3.13"
    assert properties["Architectures"] == ["arm64"]
    assert properties["TracingConfig"] == {"Mode": "Active"}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_environment_points_at_this_stack(package: Package, name: str) -> None:
    # Given the environment of a function packaged without LOCAL_* overrides
    variables = package.function(name)["Properties"]["Environment"]["Variables"]
    # Then every value refers to this stack's resources
    assert variables["WSPUSH_TABLE_NAME"] == f"{SERVICE}-{STAGE}-connections"
    assert variables["WSPUSH_QUEUE_URL"] == {"Ref": "MessagesQueue"}
    assert variables["WSPUSH_DLQ_URL"] == {"Ref": "DeadLetterQueue"}
    assert render(variables["WSPUSH_MANAGEMENT_ENDPOINT"]) == (
        f"https://${{WebsocketsApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{STAGE}"
    )
    assert variables["WSPUSH_ALLOWED_PLATFORMS"] == ""
    assert variables["POWERTOOLS_SERVICE_NAME"] == "wspush"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "wspush"
    assert variables["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    assert variables["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    assert variables["WSPUSH_STAGE"] == STAGE
    assert variables["WSPUSH_PROCESSED_TABLE_NAME"] == f"{SERVICE}-{STAGE}-processed"


def test_connect_checks_tokens_with_the_configured_key(package: Package) -> None:
    # Given the stack packaged with an HMAC secret in SSM, issuer and audience
    variables = package.function("connect")["Properties"]["Environment"]["Variables"]
    # Then $connect runs in jwt mode with exactly that key source
    assert variables["WSPUSH_AUTH_MODE"] == "jwt"
    assert variables["WSPUSH_JWT_ALGORITHMS"] == "HS256"
    assert variables["WSPUSH_JWT_SECRET_PARAMETER"] == HMAC_AUTH_PARAMS["jwtSecretParameter"]
    assert variables["WSPUSH_JWT_ISSUER"] == HMAC_AUTH_PARAMS["jwtIssuer"]
    assert variables["WSPUSH_JWT_AUDIENCE"] == HMAC_AUTH_PARAMS["jwtAudience"]
    assert variables["WSPUSH_JWKS_URL"] == variables["WSPUSH_JWT_SECRET_ARN"] == ""
    assert variables["WSPUSH_JWT_USER_CLAIM"] == "sub"
    # And only $connect sees the auth settings
    for name in set(FUNCTIONS) - {"connect"}:
        others = package.function(name)["Properties"]["Environment"]["Variables"]
        assert not [key for key in others if key.startswith(("WSPUSH_JWT", "WSPUSH_AUTH"))]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "--param jwksUrl, --param jwtSecretParameter or --param jwtSecretArn"),
        (
            {"jwksUrl": "https://issuer.example/jwks.json"},
            "--param jwtIssuer and --param jwtAudience",
        ),
        ({"authMode": "none"}, "--param authMode=none is allowed only on stages local"),
        (
            {**HMAC_AUTH_PARAMS, "jwtAlgorithms": "RS256"},
            "--param jwtAlgorithms must be a non-empty subset of HS256, HS384, HS512",
        ),
    ],
    ids=["no-key-source", "no-issuer", "auth-none", "wrong-algorithm"],
)
def test_a_stage_that_would_refuse_everyone_or_accept_anyone_does_not_package(
    tmp_path: Path, params: dict[str, str], named: str
) -> None:
    # When a deployed stage is packaged without a usable key, or with auth none
    with pytest.raises(PackagingRefused) as refused:
        package_clean_copy(tmp_path, stage="prod", params=params)
    # Then packaging stops at once, naming the parameter to set
    assert "Stage prod cannot be packaged: " in refused.value.output
    assert named in refused.value.output
    assert not (tmp_path / "package").exists()


def test_connections_table(package: Package) -> None:
    properties = package.resources["ConnectionsTable"]["Properties"]
    assert properties["TableName"] == f"{SERVICE}-{STAGE}-connections"
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "connectionId", "KeyType": "HASH"}]
    attributes = {
        (a["AttributeName"], a["AttributeType"]) for a in properties["AttributeDefinitions"]
    }
    assert attributes == {("connectionId", "S"), ("userId", "S"), ("rotation", "S")}
    by_user, by_rotation = properties["GlobalSecondaryIndexes"]
    assert by_user["IndexName"] == "byUser"
    assert by_user["KeySchema"] == [{"AttributeName": "userId", "KeyType": "HASH"}]
    assert by_user["Projection"] == {"ProjectionType": "ALL"}
    # Connection ids by the bucket and shard of their cut, for the rotation sweeper: keys only,
    # so a ping (which updates lastSeenAt) never writes to it
    assert by_rotation["IndexName"] == "byRotation"
    assert by_rotation["KeySchema"] == [{"AttributeName": "rotation", "KeyType": "HASH"}]
    assert by_rotation["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == ENCRYPTED_WITH_DATA_KEY


def test_data_is_encrypted_with_the_stacks_own_rotating_key(package: Package) -> None:
    key = package.resources["DataKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    [statement] = key["KeyPolicy"]["Statement"]
    # Who may use the key is decided by IAM policies in the account, nothing else
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }
    outputs = package.template["Outputs"]
    assert outputs["DataKeyArn"]["Value"] == {"Fn::GetAtt": ["DataKey", "Arn"]}


def test_processed_messages_table_forgets_after_its_ttl(package: Package) -> None:
    properties = package.resources["ProcessedMessagesTable"]["Properties"]
    assert properties["TableName"] == f"{SERVICE}-{STAGE}-processed"
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert properties["SSESpecification"] == ENCRYPTED_WITH_DATA_KEY


def test_messages_queue_outlasts_the_sender_and_redrives(package: Package) -> None:
    # Given the queue and the function consuming it
    queue = package.resources["MessagesQueue"]["Properties"]
    sender_timeout = int(package.function("sender")["Properties"]["Timeout"])
    # Then a message stays hidden for at least 6 sender timeouts (AWS guidance)
    assert int(queue["VisibilityTimeout"]) >= 6 * sender_timeout
    # And after 5 receives it moves to the dead-letter queue
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert queue["KmsMasterKeyId"] == {"Ref": "DataKey"}


def test_dead_letter_queue_keeps_messages_14_days(package: Package) -> None:
    queue = package.resources["DeadLetterQueue"]["Properties"]
    assert int(queue["MessageRetentionPeriod"]) == 14 * 24 * 60 * 60
    assert queue["KmsMasterKeyId"] == {"Ref": "DataKey"}


def test_alarm_fires_on_the_first_dead_letter(package: Package) -> None:
    (alarm,) = package.of_type("AWS::CloudWatch::Alarm").values()
    properties = alarm["Properties"]
    assert properties["Namespace"] == "AWS/SQS"
    assert properties["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert properties["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
    ]
    assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert properties["Threshold"] == 1


def test_outputs(package: Package) -> None:
    outputs = {key: output["Value"] for key, output in package.template["Outputs"].items()}
    assert render(outputs["WebSocketUrl"]) == (
        f"wss://${{WebsocketsApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{STAGE}"
    )
    assert outputs["QueueUrl"] == {"Ref": "MessagesQueue"}
    assert outputs["DeadLetterQueueUrl"] == {"Ref": "DeadLetterQueue"}
    assert outputs["SendFunctionName"] == {"Ref": "SendLambdaFunction"}
    assert package.resources["SendLambdaFunction"]["Properties"]["FunctionName"] == (
        f"{SERVICE}-{STAGE}-send"
    )
    assert outputs["TableName"] == {"Ref": "ConnectionsTable"}
    assert outputs["ProcessedTableName"] == {"Ref": "ProcessedMessagesTable"}


def mapping_of(package: Package, function: str) -> dict[str, Any]:
    (properties,) = (
        mapping["Properties"]
        for mapping in package.of_type("AWS::Lambda::EventSourceMapping").values()
        if mapping["Properties"]["FunctionName"]["Fn::GetAtt"][0] == function
    )
    return properties  # type: ignore[no-any-return]


def test_the_rotation_sweeper_runs_each_minute_on_eventbridges_schedule(package: Package) -> None:
    # Given the packaged stack's EventBridge rules
    ((rule_id, rule),) = package.of_type("AWS::Events::Rule").items()
    properties = rule["Properties"]
    # Then one rule, enabled, runs the rotation function every minute (one bucket), with
    # EventBridge's own scheduled event (no input: the function reads the event's time)
    assert properties["Name"] == f"{SERVICE}-{STAGE}-rotation"
    assert properties["ScheduleExpression"] == "rate(1 minute)"
    assert properties["State"] == "ENABLED"
    (target,) = properties["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["RotationLambdaFunction", "Arn"]}
    assert not {"Input", "InputPath", "InputTransformer"} & target.keys()
    # And only that rule may invoke it
    (permission,) = (
        res["Properties"]
        for res in package.of_type("AWS::Lambda::Permission").values()
        if res["Properties"]["Principal"] == "events.amazonaws.com"
    )
    assert permission["FunctionName"] == {"Fn::GetAtt": ["RotationLambdaFunction", "Arn"]}
    assert permission["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
    # And every function knows the cut, the lead and the bucket: AWS's, and the lead's default
    for name in FUNCTIONS:
        variables = package.function(name)["Properties"]["Environment"]["Variables"]
        assert variables["WSPUSH_MAX_CONNECTION_SECONDS"] == "7200"
        assert variables["WSPUSH_ROTATION_LEAD_SECONDS"] == "600"
        assert variables["WSPUSH_ROTATION_BUCKET_SECONDS"] == "60"


def test_sender_reads_the_queue_in_batches_reporting_failures(package: Package) -> None:
    properties = mapping_of(package, "SenderLambdaFunction")
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["MessagesQueue", "Arn"]}
    assert properties["FunctionName"] == {"Fn::GetAtt": ["SenderLambdaFunction", "Arn"]}
    assert properties["BatchSize"] == 10
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_lifecycle_reads_rows_appearing_and_disappearing_from_the_tables_stream(
    package: Package,
) -> None:
    properties = mapping_of(package, "LifecycleLambdaFunction")
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["ConnectionsTable", "StreamArn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["ParallelizationFactor"] == 4
    patterns = [json.loads(f["Pattern"]) for f in properties["FilterCriteria"]["Filters"]]
    assert patterns == [{"eventName": ["INSERT", "REMOVE"]}]
    (table,) = (
        r for k, r in package.of_type("AWS::DynamoDB::Table").items() if k == "ConnectionsTable"
    )
    assert table["Properties"]["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


@pytest.mark.parametrize("route_key", ["ping", "$default", "subscribe", "unsubscribe", "presence"])
def test_route_sends_the_handler_body_back(package: Package, route_key: str) -> None:
    # Given the route  /  Then its response is the integration's ($default) response
    routes = {
        key: res
        for key, res in package.of_type("AWS::ApiGatewayV2::Route").items()
        if res["Properties"]["RouteKey"] == route_key
    }
    ((route_id, route),) = routes.items()
    assert route["Properties"]["RouteResponseSelectionExpression"] == "$default"
    responses = [
        res["Properties"]
        for res in package.of_type("AWS::ApiGatewayV2::RouteResponse").values()
        if res["Properties"]["RouteId"] == {"Ref": route_id}
    ]
    assert [response["RouteResponseKey"] for response in responses] == ["$default"]


def test_websocket_stage_is_the_stage_permissions_name(package: Package) -> None:
    (stage,) = package.of_type("AWS::ApiGatewayV2::Stage").values()
    assert stage["Properties"]["StageName"] == STAGE
    assert stage["Properties"]["ApiId"] == {"Ref": "WebsocketsApi"}


# --- IAM ---------------------------------------------------------------------------------------


def test_each_function_has_a_role_of_its_own_and_no_role_is_left_over(package: Package) -> None:
    roles = {name: package.role_of(name) for name in FUNCTIONS}
    assert len(set(roles.values())) == len(FUNCTIONS), roles
    assert set(package.of_type("AWS::IAM::Role")) == set(roles.values())


@pytest.mark.parametrize("name", FUNCTIONS)
def test_role_grants_exactly_what_the_function_uses(package: Package, name: str) -> None:
    # Given the role of a function
    role = package.role_of(name)
    properties = package.resources[role]["Properties"]
    # Then only Lambda can assume it and no managed policy widens it
    assert properties["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    assert not properties.get("ManagedPolicyArns")
    # And it grants tracing, writing its own logs, and what its code calls: nothing else
    own_logs = "${" + package.log_group_of(name) + ".Arn}"
    assert grants(package, role) == {
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
        ("logs:CreateLogStream", own_logs),
        ("logs:PutLogEvents", own_logs),
        *FUNCTION_GRANTS[name],
    }


def test_the_data_key_is_usable_only_through_dynamodb_or_sqs(package: Package) -> None:
    for owner, statement in every_statement(package):
        if any(action.startswith("kms:") for action in as_list(statement["Action"])):
            via = statement["Condition"]["StringEquals"]["kms:ViaService"]
            assert render(via) in {
                "dynamodb.${AWS::Region}.amazonaws.com",
                "sqs.${AWS::Region}.amazonaws.com",
            }, owner


def test_no_statement_uses_wildcard_actions_or_data_resources(package: Package) -> None:
    for owner, statement in every_statement(package):
        for action in as_list(statement.get("Action", [])):
            # (a KMS action family limited to one key and one service is fine)
            assert "*" not in action or action in KMS_FAMILIES, f"{owner}: {statement}"
            if action.startswith(("dynamodb:", "sqs:", "execute-api:")):
                assert "*" not in as_list(statement["Resource"]), f"{owner}: {statement}"


def test_no_statement_manages_connections_beyond_this_api_and_stage(package: Package) -> None:
    # Given every IAM statement in the template, including any the framework adds
    for owner, statement in every_statement(package):
        actions = [action.lower() for action in as_list(statement.get("Action", []))]
        manages = any(
            fnmatch.fnmatchcase("execute-api:manageconnections", action) for action in actions
        )
        # Then posting to connections is allowed only on this API's stage
        if manages:
            assert {render(r) for r in as_list(statement["Resource"])} == {POST_TO_CONNECTIONS}, (
                f"{owner}: {statement}"
            )


# --- the zip -------------------------------------------------------------------------------------


def test_zip_is_small(package: Package) -> None:
    assert package.zip_path.stat().st_size < MAX_ZIP_BYTES


def test_zip_holds_handlers_and_the_shared_package_at_its_root(package: Package) -> None:
    with zipfile.ZipFile(package.zip_path) as archive:
        names = archive.namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    # Then the project's code sits at the root, as in the repository
    handlers = {path.relative_to(REPO).as_posix() for path in REPO.glob("handlers/**/*.py")}
    shared = {path.relative_to(REPO / "src").as_posix() for path in REPO.glob("src/wspush/**/*.py")}
    zip_py = {
        name for name in names if name.startswith(("handlers/", "wspush/")) and name.endswith(".py")
    }
    assert zip_py == handlers | shared
    # And nothing the runtime provides, nor anything of the project that is not code
    unwanted = {"tests", "node_modules", "src", ".venv", ".serverless", *RUNTIME_PROVIDED, "bin"}
    assert not top_level & unwanted
    assert not [name for name in top_level if name.endswith((".dist-info", ".egg-info"))]


def test_every_module_in_the_zip_brings_a_checked_cache_for_the_runtime(package: Package) -> None:
    # Given every source and every bytecode cache in the zip
    with zipfile.ZipFile(package.zip_path) as archive:
        names = set(archive.namelist())
        sources = {name: archive.read(name) for name in names if name.endswith(".py")}
        caches = {name: archive.read(name) for name in names if name.endswith(".pyc")}
    assert len(sources) > 100
    # Then each source has its cache where CPython 3.13 looks for it, and nothing else is cached
    expected = {
        name: f"{name.rpartition('/')[0]}/__pycache__/{stem}.cpython-313.pyc".lstrip("/")
        for name in sources
        for stem in [name.rpartition("/")[2].removesuffix(".py")]
    }
    assert set(caches) == set(expected.values())
    for name, source in sources.items():
        cache = caches[expected[name]]
        # And each is a checked hash-based cache of exactly that source (PEP 552): used
        # whatever the files' dates, and never for a source that differs
        assert cache[:4] == importlib.util.MAGIC_NUMBER, name
        assert int.from_bytes(cache[4:8], "little") == 0b11, f"{name}: not a checked-hash cache"
        assert cache[8:16] == importlib.util.source_hash(source), f"{name}: stale cache"


def test_native_code_in_zip_is_built_for_arm64(package: Package) -> None:
    # Given the ELF header of every shared object in the zip
    with zipfile.ZipFile(package.zip_path) as archive:
        headers = {
            name: archive.read(name)[:20]
            for name in archive.namelist()
            if re.search(r"\.so(\.|$)", name)
        }
    assert all(header.startswith(b"\x7fELF") for header in headers.values()), headers.keys()
    machines = {name: int.from_bytes(header[18:20], "little") for name, header in headers.items()}
    # Then each is built for aarch64, none for x86_64
    assert EM_X86_64 not in machines.values(), machines
    assert {name: machine for name, machine in machines.items() if machine != EM_AARCH64} == {}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_handler_imports_from_the_artifact_with_only_boto3_beside_it(
    artifact: Path, runtime_libs: Path, name: str
) -> None:
    # Given the unpacked zip, boto3 as the runtime has it, and the environment the code reads
    # When a fresh interpreter without site-packages imports the handler
    isolated = [sys.executable, "-I", "-S", "-B", "-c", IMPORT_HANDLER]
    result = subprocess.run(
        [*isolated, str(artifact), str(runtime_libs), FUNCTIONS[name]],
        env=HANDLER_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then it imports, nothing came from outside the artifact, boto3 and the stdlib, and no
    # module of the artifact was compiled: each came from the cache the zip brings
    assert result.returncode == 0, result.stderr


# --- checkov -------------------------------------------------------------------------------------

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def own_resources() -> set[str]:
    """The resources serverless.yml defines itself; everything else the framework generates."""
    from local.stack import resources

    return set(resources(STAGE))


def test_checkov_finds_nothing_and_every_suppression_says_why(package: Package) -> None:
    # Given checkov (make installs it in .venv-checkov) and the packaged template
    assert CHECKOV.exists(), "checkov is missing: `make install` creates .venv-checkov"
    # When it checks the template
    result = subprocess.run(
        [str(CHECKOV), "-f", str(package.template_path), "--framework", "cloudformation",
         "--output", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    results = report["results"]
    # Then nothing fails
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == []
    # And the suppressed findings are on framework-generated resources only, each with a reason
    own = own_resources()
    for check in results["skipped_checks"]:
        logical_id = check["resource"].split(".", 1)[1]
        assert logical_id not in own, f"{check['check_id']} suppressed on our own {logical_id}"
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check["check_id"]


# --- the deploying identity's policy (deploy/deployer-policy.json) -------------------------

DEPLOYER_POLICY = REPO / "deploy" / "deployer-policy.json"
CFN_RESOURCE_SCHEMAS = Path(cfnlint.__file__).parent / "data" / "schemas" / "resources"
# What CloudFormation's handlers may call for the stack's resource types (their schemas list
# it) but the policy leaves out, each because the stack never uses the feature.
NOT_NEEDED = {
    "s3tables:*": "the stack makes no S3 table buckets",
    "s3:CreateBucketMetadataTableConfiguration": "the deployment bucket has no metadata tables",
    "s3:UpdateBucketMetadata*TableConfiguration": "the deployment bucket has no metadata tables",
    "s3:Put[AIMR]*Configuration": "the deployment bucket sets no acceleration, analytics, "
    "inventory, intelligent tiering, metrics or replication",
    "s3:Put*ObjectLock*": "no object lock",
    "s3:PutBucketReplication": "no replication",
    "s3:PutBucketAbac": "the deployment bucket uses no attribute-based access control",
    "s3:PutBucketCORS": "the deployment bucket serves no browser",
    "s3:PutBucketLogging": "the deployment bucket keeps no access logs",
    "s3:PutBucketNotification": "the deployment bucket notifies nobody",
    "s3:PutBucketWebsite": "the deployment bucket is no website",
    "s3:REST.PUT.OBJECT": "not an IAM action (an S3 access-log operation name)",
    "dynamodb:*Item": "item access during a table import; the stack imports nothing",
    "dynamodb:Query": "table import only",
    "dynamodb:Scan": "table import only",
    "dynamodb:ImportTable": "the stack imports nothing",
    "dynamodb:*TableReplica": "the tables have no replicas (global tables)",
    "dynamodb:EnableKinesisStreamingDestination": "the tables stream to no Kinesis stream",
    "dynamodb:UpdateKinesisStreamingDestination": "the tables stream to no Kinesis stream",
    "dynamodb:DisableKinesisStreamingDestination": "the tables stream to no Kinesis stream",
    "dynamodb:PutResourcePolicy": "the tables have no resource policy",
    "kinesis:*": "no Kinesis streaming destination",
    "iam:CreateServiceLinkedRole": "replicas only",
    "logs:CreateLogStream": "table import logs only",
    "logs:PutLogEvents": "table import logs only",
    "logs:PutDataProtectionPolicy": "the log groups have no data protection policy",
    "logs:PutIndexPolicy": "the log groups have no index policy",
    "logs:PutResourcePolicy": "an account-level policy the stack never sets",
    "logs:DeleteResourcePolicy": "an account-level policy the stack never sets",
    "logs:AssociateKmsKey": "the log groups use CloudWatch Logs' own encryption",
    "logs:CreateLogDelivery": "no log delivery",
    "logs:PutBearerTokenAuthentication": "no bearer-token ingestion",
    "logs:PutLogGroupDeletionProtection": "no deletion protection",
    "firehose:*": "no delivery to Firehose",
    "iam:AttachRolePolicy": "the roles have inline policies only",
    "iam:DetachRolePolicy": "the roles have inline policies only",
    "iam:*RolePermissionsBoundary": "the roles have no permissions boundary",
    "lambda:PutFunctionCodeSigningConfig": "the functions are not code-signed",
    "lambda:PassCapacityProvider": "the functions run on Lambda's own capacity",
    "lambda:AssociateRuntimeAlias": "no runtime alias",
    "elasticfilesystem:*": "the functions mount no file system",
    "s3files:*": "the functions mount no file system",
}
# Statements whose Resource is "*": IAM cannot scope these calls, or a condition does.
UNSCOPED = {"ValidateTemplates", "ListingsIamCannotScope", "CreateTheDataKey", "SenderQueueTrigger"}


def deployer_statements() -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = json.loads(DEPLOYER_POLICY.read_text())["Statement"]
    return statements


def granted(permission: str) -> bool:
    actions = (a.lower() for st in deployer_statements() for a in as_list(st["Action"]))
    return any(fnmatch.fnmatchcase(permission.lower(), action) for action in actions)


def excused(permission: str) -> bool:
    return any(fnmatch.fnmatchcase(permission, pattern) for pattern in NOT_NEEDED)


def handler_permissions(types: set[str]) -> dict[str, set[str]]:
    """Each permission CloudFormation's create/read/update/delete handlers list for these
    resource types (cfn-lint ships the registry's schemas), and the types that list it."""
    needed: dict[str, set[str]] = {}
    found: set[str] = set()
    for path in CFN_RESOURCE_SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        if schema.get("typeName") not in types:
            continue
        found.add(schema["typeName"])
        for handler in ("create", "read", "update", "delete"):
            for permission in schema.get("handlers", {}).get(handler, {}).get("permissions", []):
                needed.setdefault(permission, set()).add(schema["typeName"])
    assert found == types, f"no schema for {types - found}"
    return needed


def test_the_deployer_policy_covers_every_resource_the_stack_creates(package: Package) -> None:
    # Given every resource type the packaged stack creates (the deployment bucket included)
    types = {resource["Type"] for resource in package.resources.values()}
    assert {"AWS::S3::Bucket", "AWS::KMS::Key", "AWS::ApiGatewayV2::Api"} <= types
    # Then every call CloudFormation's handlers make for them is granted, or the stack never
    # uses the feature it is for
    missing = {
        permission: sorted(needing)
        for permission, needing in handler_permissions(types).items()
        if not granted(permission) and not excused(permission)
    }
    assert missing == {}


def test_every_left_out_permission_is_one_a_handler_lists_and_none_is_granted(
    package: Package,
) -> None:
    needed = handler_permissions({resource["Type"] for resource in package.resources.values()})
    for pattern, reason in NOT_NEEDED.items():
        matching = [p for p in needed if fnmatch.fnmatchcase(p, pattern)]
        assert matching, f"{pattern} ({reason}) matches nothing any more: drop it"
        assert not [p for p in matching if granted(p)], f"{pattern} is granted after all"


def test_the_framework_s_own_calls_are_granted() -> None:
    # What osls calls itself, outside CloudFormation: the stack, its template, the artifacts
    for action in (
        "cloudformation:CreateStack",
        "cloudformation:UpdateStack",
        "cloudformation:DescribeStacks",
        "cloudformation:DescribeStackEvents",
        "cloudformation:DescribeStackResource",
        "cloudformation:ListStackResources",
        "cloudformation:ValidateTemplate",
        "cloudformation:GetTemplate",
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:DeleteObject",
    ):
        assert granted(action), action


def test_the_deployer_policy_reaches_only_the_stack_s_own_resources() -> None:
    for statement in deployer_statements():
        resources = as_list(statement["Resource"])
        if statement["Sid"] in UNSCOPED:
            continue
        assert "*" not in resources, statement["Sid"]
        for resource in resources:
            # each names wspush's resources, or is a KMS key or an API Gateway API, whose
            # ids are random (the key's alias and the API are the stack's own)
            assert "wspush-" in resource or re.search(r":key/\*$|::/apis|::/tags/", resource), (
                statement["Sid"],
                resource,
            )
    unscoped = {st["Sid"]: st for st in deployer_statements() if st["Sid"] in UNSCOPED}
    assert unscoped["SenderQueueTrigger"]["Condition"] == {
        "StringLike": {"lambda:FunctionArn": "arn:aws:lambda:*:*:function:wspush-*"}
    }
