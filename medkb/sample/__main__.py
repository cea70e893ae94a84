"""Entry point: `python -m medkb.sample build [--db URL] [--key-file PATH] [--new-key]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m medkb.sample", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the sample knowledge base (idempotent)")
    b.add_argument("--db", help="database URL (default $MEDKB_DATABASE_URL or sqlite:///./medkb.db)")
    b.add_argument("--key-file", default=".medkb-demo-key", help="where to write the demo key ('' for nowhere)")
    b.add_argument("--new-key", action="store_true", help="create a new demo key even if one exists")
    b.add_argument("--ontologies", default="diseases-basic,drugs", help="comma-separated ontology names")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from medkb.errors import MedkbError
    from medkb.sample.build import build_sample
    from medkb.settings import Settings

    try:
        build_sample(Settings().with_database(args.db), key_file=Path(args.key_file) if args.key_file else None,
                     new_key=args.new_key, ontologies=[o for o in args.ontologies.split(",") if o])
    except MedkbError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
