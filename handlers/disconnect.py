"""``$disconnect``: forget the connection (best effort: API Gateway may never call it)."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.contract import events, frames
from wspush.errors import StorageUnavailable
from wspush.observability import logger, metrics, tracer
from wspush.routes import sessions


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    connection_id = events.RouteEvent.of(event).connection_id
    try:
        sessions.close_connection(connection_id)
    except StorageUnavailable:
        # The row's TTL removes it later; a 410 on the next send removes it sooner.
        logger.exception("connection not deleted", connection_id=connection_id)
        metrics.add_metric(name="ConnectionErrors", unit="Count", value=1)
        return frames.route_response(500, "the connection could not be deleted")
    return frames.route_response(200, "disconnected")
