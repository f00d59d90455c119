"""What `make dev` prints once ready: examples that work as pasted, wherever the ports are."""

from __future__ import annotations

import re

from local.run import examples, moved_ports
from wspush.tools.local import LocalStack


def test_with_the_default_ports_the_examples_need_nothing_first() -> None:
    text = examples(LocalStack(), "none")
    assert moved_ports(LocalStack()) == ""
    assert "export" not in text
    assert "  send        .venv/bin/wspush send --user u1 --type order.updated" in text
    assert "  listen      .venv/bin/wspush listen --user u1" in text
    assert "  presence    .venv/bin/wspush presence lobby:main" in text
    assert "  events      .venv/bin/wspush events --follow" in text


def test_moved_ports_are_one_export_line_to_paste_and_no_example_is_prefixed() -> None:
    # Given the stack on other ports for the AWS stand-ins and the Lambda API only
    local = LocalStack(aws_port=45566, lambda_port=45002)
    text = examples(local, "jwt")
    # Then one line exports exactly the moved ports, and every example is as with defaults
    exports = "export WSPUSH_LOCAL_AWS_PORT=45566 WSPUSH_LOCAL_LAMBDA_PORT=45002"
    assert moved_ports(local) == exports
    assert text.count(exports) == 1
    commands = re.findall(r"(\S*)wspush (?:send|listen|presence|events)", text)
    assert commands == [".venv/bin/"] * 7
    assert "jwt: HS256 tokens from `wspush token`" in text
