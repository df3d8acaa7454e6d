"""``python -m glide_edu.book regenerate chNN [options]`` — rebuild a chapter's precomputed results."""

from __future__ import annotations

import argparse
import sys

from glide_edu.book import REGENERABLE, regenerate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m glide_edu.book",
        description="Rebuild the precomputed results a chapter reads (data/results/).",
        epilog="chapters: " + "; ".join(f"{k}: {v}" for k, v in REGENERABLE.items()),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the chapters with precomputed results and what each writes")
    regen = sub.add_parser("regenerate", help="rebuild one chapter's results (options: regenerate chNN --help)")
    regen.add_argument("chapter", choices=sorted(REGENERABLE))
    args, rest = parser.parse_known_args(argv)
    if args.command == "list":
        for chapter, what in REGENERABLE.items():
            print(f"{chapter}: {what}")
        return 0
    regenerate(args.chapter, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
