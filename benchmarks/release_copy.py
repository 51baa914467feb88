"""What the public copy of a release costs: shards rewritten with public source paths, against a plain copy.

``filmweaver release`` rewrites every shard whose scene JSON holds a local source path (the ``json``
members change, clips and keyframes are copied as they are) and hard-links shards that need no change. This
times, in one run on the same files: ``shutil.copyfile`` of the shards (the floor for any rewrite), the
rewrite (``data_cards.public.write_public_copy``), and the same call on an already public folder (one
read, then links). Clips of 512 KiB are the size of a 3 s shot at 480p (CRF 23).

    .venv/bin/python benchmarks/release_copy.py [--scenes 200] [--clip-kb 512]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from data_cards.dataset import CuratedDataset
from data_cards.public import source_paths, write_public_copy
from filmweaver_testing.scenes_folder import write_scenes_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=200, help="two-shot scenes in the shard")
    ap.add_argument("--clip-kb", type=int, default=512, help="bytes of each shot clip, KiB")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = write_scenes_folder(root / "out", args.scenes, clip=os.urandom(args.clip_kb << 10))
        ds = CuratedDataset.load(out)
        size = sum(s.bytes for s in ds.shards) / 2**20

        t0 = time.perf_counter()
        for s in ds.shards:
            shutil.copyfile(out / s.url, root / f"copy-{Path(s.url).name}")
        copy_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        write_public_copy(ds, root / "release", source_paths(ds, None))
        rewrite_s = time.perf_counter() - t0

        public = CuratedDataset.load(root / "release")
        t0 = time.perf_counter()
        write_public_copy(public, root / "again", source_paths(public, None))
        link_s = time.perf_counter() - t0

    print(f"{args.scenes} scenes, {size:.0f} MiB of shards")
    print("| step | s | MiB/s | ratio to copy |")
    print("|---|---:|---:|---:|")
    for label, s in [
        ("plain copy (shutil.copyfile)", copy_s),
        ("public rewrite", rewrite_s),
        ("already public: links", link_s),
    ]:
        print(f"| {label} | {s:.2f} | {size / s:.0f} | {s / copy_s:.2f}x |")


if __name__ == "__main__":
    main()
