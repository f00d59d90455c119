"""``send``: invoked directly by services; delivers now and answers per message.

Event: one envelope, or a list of envelopes. Answer: ``{"id", "targets", "delivered",
"gone", "failed", "errors"}`` per message, or ``{"error": {"code", "message", "field"}}``.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.fanout import sending
from wspush.observability import logger, metrics, tracer
from wspush.settings import get_settings


# No correlation id from the event: its `id` is the caller's, unvalidated, possibly huge.
@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: Any, context: LambdaContext) -> dict[str, Any] | list[dict[str, Any]]:
    settings = get_settings()
    return sending.send(
        event,
        settings,
        request_id=context.aws_request_id,
        deadline=sending.deadline_of(context, settings),
        context=context,
    )
