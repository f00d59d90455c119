"""``$default``: every frame no route takes gets a JSON error reply saying why."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.clock import now_ms
from wspush.contract import events, frames
from wspush.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = events.RouteEvent.of(event)
    logger.info("frame rejected", connection_id=request.connection_id)
    metrics.add_metric(name="FramesRejected", unit="Count", value=1)
    body = frames.frame_text(request.body, base64_encoded=request.base64_encoded)
    return frames.route_response(200, frames.unknown_frame_reply(body, now_ms=now_ms()))
