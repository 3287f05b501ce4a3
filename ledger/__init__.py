"""Trust Ledger Service: a double-entry ledger for money held in trust."""

__version__ = "0.1.0"
