"""``filmweaver release``: the dataset card, Croissant metadata, plots and scene browser of a curated folder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "release",
        help="build OUT/card/ (dataset card, croissant.json, plots, browse.html); optionally push to the Hub",
        description=__doc__,
    )
    p.add_argument("out", metavar="OUT", help="a curated dataset folder (filmweaver curate --out OUT)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload card, manifests and shards to this HF dataset repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--license", default="other", help="license of the released clips and annotations (default: other)")
    p.add_argument("--source-license", action="append", default=[], help="license of the source videos (repeatable)")
    p.add_argument("--pretty-name", default=None, help="dataset name shown on the card")
    p.add_argument("--tag", action="append", default=None, help="Hub tag (repeatable; replaces the defaults)")
    p.add_argument("--homepage", default="", help="dataset homepage URL")
    p.add_argument("--contact", default="", help="where takedown and consent requests go")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.errors import check_hub_push

    from .card import CardOptions
    from .release import build_release, push_to_hub

    if args.push_to_hub:  # before the card is written: fail at once when the upload cannot work
        check_hub_push(args.push_to_hub)
    values = {
        "license": args.license,
        "source_licenses": args.source_license,
        "homepage": args.homepage,
        "contact": args.contact,
    }
    if args.pretty_name:
        values["pretty_name"] = args.pretty_name
    if args.tag:
        values["tags"] = args.tag
    release = build_release(args.out, CardOptions(**values), repo_id=args.push_to_hub)
    c = release.stats.counts
    print(f"card      : {release.readme}")
    print(f"croissant : {release.croissant} (valid)")
    print(f"plots     : {len(release.plots)} in {release.card_dir / 'plots'}")
    print(f"browser   : {release.browser}")
    print(f"dataset   : {c['scenes_released']} scenes, {c['shots_released']} shots from {c['videos']} videos")
    if args.push_to_hub:
        push_to_hub(args.out, release, args.push_to_hub, private=args.private)
        print(f"pushed    : https://huggingface.co/datasets/{args.push_to_hub}")
    return 0
