"""Directories: coupon books with categories, registered users and paid access."""
