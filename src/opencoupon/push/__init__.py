"""Web Push: VAPID keys, browser subscriptions per coupon session or loyalty card holder, and
durable fan-outs with aes128gcm payloads."""
