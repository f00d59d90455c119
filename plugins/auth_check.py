"""Refuse to package a stack whose ``$connect`` would refuse everyone, or accept anyone.

Run by ``auth-check.js`` before ``sls package`` / ``sls deploy`` with the ``connect``
function's environment, as the framework resolved it from ``--param``s, as JSON on stdin.
The rules are wspush's own (``wspush.settings.AuthSettings``, which ``$connect`` applies at
run time), so packaging and the running function can never disagree; only the names change:
each problem names the ``--param`` that sets it, not the environment variable.

Exit 0 when the settings are usable; otherwise exit 1 with one line saying what to set.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wspush.settings import AuthSettings, SettingsError

# Each auth variable of the connect function, and the --param serverless.yml sets it from.
PARAMETERS = {
    "WSPUSH_AUTH_MODE": "authMode",
    "WSPUSH_JWT_ALGORITHMS": "jwtAlgorithms",
    "WSPUSH_JWT_ISSUER": "jwtIssuer",
    "WSPUSH_JWT_AUDIENCE": "jwtAudience",
    "WSPUSH_JWT_USER_CLAIM": "jwtUserClaim",
    "WSPUSH_JWKS_URL": "jwksUrl",
    "WSPUSH_JWT_SECRET_PARAMETER": "jwtSecretParameter",
    "WSPUSH_JWT_SECRET_ARN": "jwtSecretArn",
}
_VARIABLE = re.compile(r"\bWSPUSH_[A-Z_]+\b")


def in_parameters(text: str) -> str:
    """``text`` with each auth variable named as the ``--param`` that sets it."""

    def name(match: re.Match[str]) -> str:
        parameter = PARAMETERS.get(match.group(0))
        return f"--param {parameter}" if parameter else match.group(0)

    return _VARIABLE.sub(name, text)


def problem(environment: dict[str, object]) -> str | None:
    """What makes these settings unusable, in the deployer's terms; None if nothing does."""
    strings = {key: value for key, value in environment.items() if isinstance(value, str)}
    try:
        AuthSettings.from_env(strings)
    except SettingsError as exc:
        return in_parameters(str(exc))
    return None


def main() -> int:
    found = problem(json.load(sys.stdin))
    if found is None:
        return 0
    print(found)
    return 1


if __name__ == "__main__":
    sys.exit(main())
