"""Single-use access URLs: personal coupon links, one at a time or up to 100,000 in one call."""
