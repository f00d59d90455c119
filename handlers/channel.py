"""``subscribe``, ``unsubscribe``, ``presence``: a channel request, answered through the route
response (``subscribed``, ``unsubscribed``, ``presence``, or an ``error`` saying why); a
subscribe with ``since`` first posts what the connection missed of the channel."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.channels import subscriptions
from wspush.clock import Deadline, now_ms
from wspush.contract import events, frames
from wspush.observability import logger, metrics, tracer
from wspush.routes.requests import REPLY_MARGIN_MS
from wspush.settings import get_settings


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = events.RouteEvent.of(event)
    body = frames.frame_text(request.body, base64_encoded=request.base64_encoded)
    answer = subscriptions.handle(
        request.connection_id,
        body,
        get_settings(),
        now_ms=now_ms(),
        deadline=Deadline.of(context, margin_ms=REPLY_MARGIN_MS),
    )
    return frames.route_response(200, answer)
