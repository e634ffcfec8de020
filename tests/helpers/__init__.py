"""Helpers shared by the tests: brokers, publishers, receivers, PKI, rule contexts."""
