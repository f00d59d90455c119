"""``rotation``: each minute (an EventBridge schedule), queues a reconnect message for every
connection whose cut by API Gateway is about ``WSPUSH_ROTATION_LEAD_SECONDS`` away."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.clock import Deadline, now_ms
from wspush.contract.events import ScheduledEvent
from wspush.observability import logger, metrics, tracer
from wspush.rotation import sweeper
from wspush.settings import get_settings


@logger.inject_lambda_context(correlation_id_path="id")
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    tick = ScheduledEvent.of(event, now_ms=now_ms())
    settings = get_settings()
    deadline = Deadline.of(context, margin_ms=settings.deadline_margin_ms)
    report = sweeper.sweep(
        tick.time_ms, settings, now_ms=now_ms(), deadline=deadline, context=context
    )
    return report.as_dict()
