"""Webhook endpoints, signed deliveries with retries, replay, and event verification."""
