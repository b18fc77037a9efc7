"""`opencoupon vapid …`"""

from __future__ import annotations

import typer

from opencoupon.config import get_settings

vapid_app = typer.Typer(help="Web Push application server key (VAPID).", no_args_is_help=True)


@vapid_app.command("show")
def show() -> None:
    """Print the public key browsers subscribe with (the key is generated on first use)."""
    from opencoupon.cli.common import check_not_newer
    from opencoupon.db.migrate import upgrade
    from opencoupon.push import vapid
    from opencoupon.runtime import Runtime

    settings = get_settings()
    upgrade(settings.database_url, before=check_not_newer)
    runtime = Runtime.from_settings(settings)
    try:
        typer.echo(vapid.public_key(runtime))
    finally:
        runtime.db.dispose()
