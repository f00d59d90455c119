"""`make bench`: what fan-out costs (throughput, CPU, memory), cold imports and the zip size.

Nothing here asserts performance: the figures go to ``bench/results.json`` and a table.
A run fails only when a delivery was wrong (a post missing, doubled or misreported).
"""
