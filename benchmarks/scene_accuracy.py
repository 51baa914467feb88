"""Scene-boundary accuracy on real footage: shots -> embeddings -> scenes, per embedder and clustering setting.

Reads the scene films of the real-footage set (``benchmarks/real_footage.py``: scenes of 2-4 real shots of one
source, cut A-B-A-B or as jump cuts in one take, each scene from another source, joined by hard cuts and
dissolves). Every film runs through ShotSplitter (``--shots-backend``, default ``auto``) once; each embedder
then embeds the keyframes and SceneClusterer groups the shots (no shot or scene filter: every shot is kept).
A true scene start counts when a predicted scene starts within +-1 frame of a cut, or inside a dissolve.

Embedders: ``fallback`` (the weight-free default) and ``clip-tiny-random`` (a random tiny open_clip model
saved to a file and loaded through ``load_embedder``, the real loading path: it checks the code path, its
numbers mean nothing); ``--clip-checkpoint PATH`` adds a real open_clip ViT-B-32 checkpoint where one exists.

    .venv/bin/python benchmarks/scene_accuracy.py --real
    .venv/bin/python benchmarks/scene_accuracy.py --real --seed 1 --films 12     # held out: other films
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_footage import build  # noqa: E402
from benchmarks.shot_accuracy import Tally, Transition, match  # noqa: E402
from curation.config import CurateConfig  # noqa: E402
from curation.embed import Embedder  # noqa: E402
from curation.scenes import SceneClusterer  # noqa: E402
from curation.shots import ShotSplitter  # noqa: E402
from curation.stage import VideoUnit  # noqa: E402
from curation.video import probe  # noqa: E402

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip_config(folder: Path) -> dict:
    """Embed config of a random tiny open_clip saved to ``folder`` (weights + model config JSON)."""
    import open_clip
    import torch

    cfg_path = folder / "tiny-clip-bench.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip-bench").state_dict(), folder / "tiny.pt")
    return {"backend": "open_clip", "pretrained": str(folder / "tiny.pt"), "clip_config_path": str(cfg_path)}


def scene_starts(unit: VideoUnit) -> list[tuple[int, str]]:
    shots = unit.shots
    return [(b.start_frame, b.transition_in) for a, b in zip(shots, shots[1:]) if a.scene_id != b.scene_id]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="the real-footage scene films (the only set so far)")
    ap.add_argument("--shots-backend", default="auto")
    ap.add_argument("--clip-checkpoint", help="a real open_clip ViT-B-32 checkpoint file, if this machine has one")
    ap.add_argument(
        "--seed", type=int, default=0, help="other scene films from the same true shots (held out: 1, 2...)"
    )
    ap.add_argument("--films", type=int, default=6, help="scene films to build for --seed other than 0")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    films = build(0, args.films, seed=args.seed)["scenes"] if args.seed else build()["scenes"]
    n_true = sum(len(f.scene_starts()) for f in films)
    print(f"{len(films)} scene films, {sum(f.n_frames for f in films)} frames, {n_true} true scene starts")

    splitter = ShotSplitter(CurateConfig.model_validate({"shots": {"backend": args.shots_backend}}))
    t0 = time.perf_counter()
    units = [splitter.process(VideoUnit(probe(str(f.path)))) for f in films]
    print(
        f"shots: backend {splitter.backend}, {sum(len(u.shots) for u in units)} shots, {time.perf_counter() - t0:.1f} s"
    )

    tmp = tempfile.TemporaryDirectory()
    embedders = {"fallback": {"backend": "fallback"}, "clip-tiny-random": tiny_clip_config(Path(tmp.name))}
    if args.clip_checkpoint:
        embedders["clip-vit-b-32"] = {"backend": "open_clip", "pretrained": args.clip_checkpoint}
    settings = {
        "fixed threshold, mean embedding (default)": {},
        "fixed threshold, keyframe sets (best pair)": {"compare": "best_pair"},
        "adaptive threshold, mean embedding": {"adaptive": True},
        "adaptive threshold, keyframe sets": {"adaptive": True, "compare": "best_pair"},
    }
    print("| embedder | clustering | P / R / F1 | thresholds used |")
    print("|---|---|---|---|")
    for name, emb_cfg in embedders.items():
        config = CurateConfig.model_validate({"embed": {**emb_cfg, "device": "cpu"}})
        embedder = Embedder(config)
        embedded = [
            embedder.process(VideoUnit(u.video, [dataclasses.replace(s) for s in u.shots], u.keyframes)) for u in units
        ]
        for label, opts in settings.items():
            cfg = config.model_copy(deep=True)
            for key, value in opts.items():
                setattr(cfg.scenes, key, value)
            clusterer = SceneClusterer(cfg)
            tally = Tally()
            used = []
            for film, unit in zip(films, embedded):
                out = clusterer.process(unit)
                used.append(out.video.scene_threshold)
                truth = [
                    Transition(t.frame, (t.span[0] - 1, t.span[1] + 1) if t.span else None) for t in film.scene_starts()
                ]
                tally.add(match(truth, scene_starts(out)))
            p, r, f = tally.prf()
            print(
                f"| {name} | {label} | {p:.3f} / {r:.3f} / **{f:.3f}** | {min(used):.2f}-{max(used):.2f} |", flush=True
            )


if __name__ == "__main__":
    main()
