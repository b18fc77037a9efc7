"""`uvicorn opencoupon.asgi:app`: the app configured from the environment."""

from opencoupon.app import create_app

app = create_app()
