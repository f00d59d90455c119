"""``$connect``: store the connection, or refuse the handshake with a 4xx/5xx."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.clock import now_ms
from wspush.contract import events, frames
from wspush.errors import (
    AuthUnavailable,
    BadHandshake,
    ConnectionRefused,
    Forbidden,
    StorageUnavailable,
    Unauthenticated,
)
from wspush.observability import logger, metrics, tracer
from wspush.routes import handshake
from wspush.settings import SettingsError, get_auth_settings, get_settings

# The handshake status each kind of refusal gets.
REFUSAL_STATUS: dict[type[ConnectionRefused], int] = {
    BadHandshake: 400,
    Unauthenticated: 401,
    Forbidden: 403,
}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = events.RouteEvent.of(event)
    connection_id = request.connection_id
    try:
        handshake.open_connection(
            connection_id,
            request.query,
            get_settings(),
            get_auth_settings(),
            now_ms=now_ms(),
            connected_at=request.connected_at,
        )
    except ConnectionRefused as exc:
        status = REFUSAL_STATUS[type(exc)]
        logger.info(
            "connection refused", connection_id=connection_id, status=status, reason=exc.reason
        )
        metrics.add_metric(name="ConnectionsRefused", unit="Count", value=1)
        return frames.route_response(status, exc.reason)
    except AuthUnavailable:
        # Fail closed: a token that cannot be checked is not accepted.
        logger.exception(
            "connection refused: tokens cannot be checked", connection_id=connection_id
        )
        metrics.add_metric(name="ConnectionErrors", unit="Count", value=1)
        return frames.route_response(503, "authentication is unavailable, try again later")
    except SettingsError:
        logger.exception("connection refused: wspush is misconfigured", connection_id=connection_id)
        metrics.add_metric(name="ConnectionErrors", unit="Count", value=1)
        return frames.route_response(503, "connections are unavailable")
    except StorageUnavailable:
        logger.exception("connection not stored", connection_id=connection_id)
        metrics.add_metric(name="ConnectionErrors", unit="Count", value=1)
        return frames.route_response(500, "the connection could not be stored")
    return frames.route_response(200, "connected")
