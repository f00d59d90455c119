"""The one place that creates the Powertools logger, metrics and tracer.

Service name and metrics namespace come from the standard ``POWERTOOLS_*``
environment variables set in serverless.yml.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
# Auto-patching boto3 would open an X-Ray subsegment per PostToConnection call,
# from worker threads that have no segment; traces stay at handler/step level.
tracer = Tracer(auto_patch=False)
