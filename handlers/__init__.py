"""Lambda entry points, one per function in serverless.yml. Each is thin: it reads
the event, calls one function of the ``wspush`` package and shapes the answer."""
