"""Test and demo doubles of the FilmWeaver project, kept out of the library packages.

Nothing in ``curation``, ``pipelines``, ``training``, ``inference`` or ``data_cards`` imports this package,
except ``filmweaver demo`` (which curates a synthetic film). Its modules make data with known answers:

- ``films``: synthetic films with ground truth (cuts, dissolves, fades, motion, recurring characters).
- ``fake_llm``: fake Gemini and OpenAI-compatible servers on loopback, for captioning tests and benchmarks.
- ``scene_shards``: small synthetic scene shards in the curated format, for the model side.
- ``scenes_folder``: a conforming release scenes folder for the scene-browser test and its scale benchmark.
- ``chromium``: a headless Chromium driver over the DevTools pipe, for browser tests.
"""
