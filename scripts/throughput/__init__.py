"""The throughput benchmark's parts (``scripts/bench.py`` is the entry point).

``workload``: the seeded ledgers (deterministic account ids) and how transfers pick accounts; ``raw_sql``: the
pgbench ceiling from the SQL our write path issues; ``in_process``: domain services from the container in threads;
``served``: ``ledger serve`` with several worker processes and their peak RSS; ``http_load``: the external aiohttp
load generator (its own process); ``report``: targets, table, JSON, SVG and machine facts.
"""
