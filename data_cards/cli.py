"""``filmweaver release`` (the publishable release folder of a curated output) and ``filmweaver shards``
(the shard URLs of a curated output or release, from its ``index.json``)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "release",
        help="build the release folder (dataset card, data, croissant.json, plots, browse.html); optionally push",
        description="Build OUT/release/ (or --to DIR): a Hugging Face dataset repository with the card, the shards "
        "and manifests with source paths made relative (OUT keeps the full paths), croissant.json, plots and "
        "the scene browser.",
    )
    p.add_argument("out", metavar="OUT", help="a curated dataset folder (filmweaver curate --out OUT)")
    p.add_argument("--to", metavar="DIR", default=None, help="release folder (default: OUT/release)")
    p.add_argument(
        "--source-root",
        action="append",
        default=None,
        metavar="DIR",
        help="published video uris are made relative to this folder or s3://bucket/prefix (repeatable; default: "
        "the deepest folder holding every input); uris outside every root keep their file name only",
    )
    p.add_argument(
        "--browse-clips",
        type=int,
        default=None,
        metavar="N",
        help="scenes whose shot clips the browser plays, spread over the dataset (default 200; -1: all)",
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the release folder to this HF dataset repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--license", default="other", help="license of the released clips and annotations (default: other)")
    p.add_argument("--source-license", action="append", default=[], help="license of the source videos (repeatable)")
    p.add_argument("--pretty-name", default=None, help="dataset name shown on the card")
    p.add_argument("--tag", action="append", default=None, help="Hub tag (repeatable; replaces the defaults)")
    p.add_argument("--homepage", default="", help="dataset homepage URL")
    p.add_argument("--contact", default="", help="where takedown and consent requests go")
    p.set_defaults(func=run)

    s = subparsers.add_parser(
        "shards",
        help="print the shard files of a curated output or release (from index.json), or one brace pattern",
        description="Print the shards listed by DIR/index.json, one absolute path per line, or with --pattern one "
        "brace pattern that expands to exactly those files: webdataset.WebDataset(PATTERN) reads them, whatever "
        "the engine named them and however many there are. DIR may be an object-store output (s3://bucket/ds, "
        "gs://...): its URIs are printed (webdataset opens s3:// ones as 'pipe:aws s3 cp URI -').",
    )
    s.add_argument("dir", metavar="DIR", help="a curated output (filmweaver curate --out, local or s3://) or a release")
    s.add_argument("--pattern", action="store_true", help="print one brace pattern instead of the list")
    s.add_argument("--relative", action="store_true", help="paths relative to DIR, as in index.json")
    s.set_defaults(func=run_shards)


def run(args: argparse.Namespace) -> int:
    from pipelines.errors import check_hub_push

    from .browser import DEFAULT_CLIP_SCENES
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
    clips = DEFAULT_CLIP_SCENES if args.browse_clips is None else args.browse_clips
    release = build_release(
        args.out, CardOptions(**values), args.push_to_hub, args.to, args.source_root, clip_scenes=clips
    )
    c = release.stats.counts
    print(f"release   : {release.root} (load_dataset({str(release.root)!r}) reads it)")
    print(f"card      : {release.readme}")
    print(f"croissant : {release.croissant} (valid)")
    print(f"plots     : {len(release.plots)} in {release.root / 'plots'}")
    print(f"browser   : {release.browser}")
    print(f"dataset   : {c['scenes_released']} scenes, {c['shots_released']} shots from {c['videos']} videos")
    if args.push_to_hub:
        push_to_hub(release, args.push_to_hub, private=args.private)
        print(f"pushed    : https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


def run_shards(args: argparse.Namespace) -> int:
    from .loading import brace_pattern, shard_urls

    urls = shard_urls(args.dir, absolute=not args.relative)
    if not urls:
        print(f"filmweaver: {args.dir}/index.json lists no shards (no scene was written)", file=sys.stderr)
        return 1
    print(brace_pattern(urls) if args.pattern else "\n".join(urls))
    return 0
