"""Adapters: settings, secrets, the database engine, repositories, units of work, the embedded server."""
