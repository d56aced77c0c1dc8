"""Tests of the mail store."""
