"""Distribution: send coupons by email and SMS (API, bulk command, worker tasks)."""
