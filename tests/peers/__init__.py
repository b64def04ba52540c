"""Helpers that start real peers (Kannel, an SMPP SMSC) for the SMS tests."""
