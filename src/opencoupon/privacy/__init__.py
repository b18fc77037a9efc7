"""Per-person data export and erasure (GDPR right of access and right to erasure)."""
