"""Tests of the SMTP core."""
