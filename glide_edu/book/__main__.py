"""``python -m glide_edu.book regenerate chNN [options]`` — rebuild a chapter's precomputed results;
``python -m glide_edu.book student --out DIR`` — write the student edition (solutions replaced by stubs);
``python -m glide_edu.book figures --out DIR`` — each chapter's key figure as PNG and SVG (for slides)."""

from __future__ import annotations

import argparse
import sys

from glide_edu.book import REGENERABLE, regenerate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "regenerate" and argv[1] in REGENERABLE:
        regenerate(argv[1], argv[2:])  # the chapter's own options, --help included
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m glide_edu.book",
        description="Rebuild the precomputed results a chapter reads (data/results/).",
        epilog="chapters: " + "; ".join(f"{k}: {v}" for k, v in REGENERABLE.items()),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the chapters with precomputed results and what each writes")
    regen = sub.add_parser("regenerate", help="rebuild one chapter's results (options: regenerate chNN --help)")
    regen.add_argument("chapter", choices=sorted(REGENERABLE))
    student = sub.add_parser("student", help="write the student edition: every solution cell replaced by its stub")
    student.add_argument("--out", required=True, help="folder for the student's chapters (not chapters/)")
    student.add_argument("--chapters", default="chapters", help="the book's chapters folder (default: chapters)")
    figures = sub.add_parser("figures", help="execute the chapters and write each one's key figure (PNG + SVG)")
    figures.add_argument("--out", required=True, help="folder for NN_slug.png / NN_slug.svg")
    figures.add_argument("--chapters", default="chapters", help="the book's chapters folder (default: chapters)")
    figures.add_argument("--only", nargs="*", default=None, metavar="NN", help="chapter numbers, e.g. 01 05")
    figures.add_argument("--profile", choices=["fast", "full"], default="fast")
    args = parser.parse_args(argv)  # only errors and help reach this line for "regenerate"
    if args.command == "figures":
        from glide_edu.book.figures import export_all

        try:
            written = export_all(args.chapters, args.out, args.profile, args.only)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
        print(f"wrote {len(written)} files to {args.out}")
        return 0
    if args.command == "student":
        from glide_edu.book.student import write_student_edition

        try:
            written = write_student_edition(args.chapters, args.out)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
        print(f"wrote the student edition of {len(written)} chapters to {args.out}")
        return 0
    for chapter, what in REGENERABLE.items():
        print(f"{chapter}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
