"""Benchmarks of the embedded relay against a raw aiohttp loop and arq + Redis.

Run everything with ``.venv/bin/python -m bench.run`` (``make bench``); the parts run alone with
``python -m bench.throughput`` and ``python -m bench.publish_latency``. See docs/benchmarks.md.
"""
