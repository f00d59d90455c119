"""The package-time auth check (plugins/auth_check.py): wspush's own rules, the deployer's names."""

from __future__ import annotations

import re

import pytest
import yaml

from local.stack import SERVERLESS_YML, _TemplateLoader
from plugins import auth_check

HMAC = {
    "WSPUSH_STAGE": "prod",
    "WSPUSH_AUTH_MODE": "jwt",
    "WSPUSH_JWT_ALGORITHMS": "HS256",
    "WSPUSH_JWT_SECRET_PARAMETER": "/wspush/prod/jwt",
    "WSPUSH_JWT_ISSUER": "https://issuer.example",
    "WSPUSH_JWT_AUDIENCE": "wspush",
}


def test_usable_settings_pass() -> None:
    assert auth_check.problem(HMAC) is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"WSPUSH_JWT_SECRET_PARAMETER": ""}, "--param jwksUrl, --param jwtSecretParameter"),
        ({"WSPUSH_JWT_AUDIENCE": ""}, "--param jwtIssuer and --param jwtAudience"),
        ({"WSPUSH_AUTH_MODE": "none"}, "--param authMode=none is allowed only on stages local"),
        ({"WSPUSH_JWT_SECRET_PARAMETER": "no-slash"}, "--param jwtSecretParameter must be a path"),
    ],
)
def test_each_problem_names_the_parameter_that_sets_it(change: dict[str, str], named: str) -> None:
    found = auth_check.problem({**HMAC, **change})
    assert found is not None
    assert named in found
    assert "WSPUSH_" not in found


def test_values_the_framework_left_unresolved_count_as_unset() -> None:
    # (CloudFormation intrinsics stay objects: never a key source)
    found = auth_check.problem({**HMAC, "WSPUSH_JWT_SECRET_PARAMETER": {"Ref": "X"}})
    assert found is not None
    assert "exactly one key source" in found


def test_the_parameter_names_are_those_serverless_yml_reads() -> None:
    # Given serverless.yml: WSPUSH_X: ${env:LOCAL_X, self:custom.auth.y} and
    # custom.auth.y: ${param:name, default}
    config = yaml.load(SERVERLESS_YML.read_text(), Loader=_TemplateLoader)
    auth = config["custom"]["auth"]
    environment = config["functions"]["connect"]["environment"]
    read: dict[str, str] = {}
    for variable, value in environment.items():
        reference = re.search(r"self:custom\.auth\.(\w+)", value)
        assert reference, variable
        parameter = re.fullmatch(r"\$\{param:(\w+), .*\}", auth[reference.group(1)])
        assert parameter, auth[reference.group(1)]
        read[variable] = parameter.group(1)
    # Then the check names each variable by the parameter the deployer sets
    assert read == auth_check.PARAMETERS
