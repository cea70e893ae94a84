"""`medkb keys create|list|revoke`: API keys bound to a tenant and a role, stored hashed."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from medkb.cli.context import get_ctx

console = Console()


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API keys (each bound to one tenant and one role; stored as salted hashes).",
                       no_args_is_help=True)

    @keys.command("create")
    def create(
        ctx: typer.Context,
        tenant: Annotated[str, typer.Option(help="Tenant the key is confined to.")],
        role: Annotated[str, typer.Option(help="clinician | curator | admin | researcher")],
        name: Annotated[Optional[str], typer.Option(help="A label to recognise the key by.")] = None,
    ) -> None:
        """Create a key and print it ONCE (only its hash is kept).

        Example: medkb keys create --tenant hospital-a --role clinician --name "ward 3 app"
        """
        from medkb.api.auth import create_key

        key_id, key = create_key(get_ctx(ctx).store, tenant, role, name)
        console.print(f"created key {key_id} (tenant {tenant}, role {role}). Store it now; it is not shown again:")
        typer.echo(key)

    @keys.command("list")
    def list_(
        ctx: typer.Context,
        tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's keys.")] = None,
    ) -> None:
        """List keys (ids, tenants, roles, state — never secrets).

        Example: medkb keys list --tenant hospital-a
        """
        from medkb.api.auth import list_keys

        t = Table("id", "tenant", "role", "name", "created", "revoked")
        for k in list_keys(get_ctx(ctx).store, tenant):
            t.add_row(k.id, k.tenant_id, k.role, k.name or "", str(k.created_at)[:19],
                      str(k.revoked_at)[:19] if k.revoked_at else "")
        console.print(t)

    @keys.command("revoke")
    def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key id (from keys list).")]) -> None:
        """Revoke a key; requests with it get 401 from then on.

        Example: medkb keys revoke 3f9a1c0b2d4e
        """
        from medkb.api.auth import revoke_key

        revoke_key(get_ctx(ctx).store, key_id)
        console.print(f"revoked {key_id}")

    app.add_typer(keys, name="keys")
