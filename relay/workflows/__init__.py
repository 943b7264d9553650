"""Upstash Workflow's protocol on relay: runs, step entries, waiters (on the same ports)."""
