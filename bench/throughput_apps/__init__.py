"""Helpers of ``bench/throughput.py``: the two apps the workers load, the counter their
tasks bump, the client subprocess, and the private Redis / RabbitMQ servers."""
