"""``ping``: answer ``{"type": "pong"}`` through the route response and refresh liveness."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.clock import now_ms
from wspush.contract import events, frames
from wspush.observability import logger, metrics, tracer
from wspush.routes import sessions
from wspush.settings import get_settings


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    connection_id = events.RouteEvent.of(event).connection_id
    return frames.route_response(200, sessions.pong(connection_id, get_settings(), now_ms=now_ms()))
