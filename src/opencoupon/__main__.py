from opencoupon.cli.main import app

app()
