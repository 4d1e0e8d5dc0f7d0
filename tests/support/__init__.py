"""Shared test helpers (no tests of their own), imported as ``tests.support.<module>``.

- ``protocol_fixtures``: tiny datasets in each real protocol's on-disk layout, and the smoke runs
  (the session fixtures ``synthetic_source`` and ``smoke_reference`` that use them are in
  ``tests/conftest.py``);
- ``eval_standins``: the evaluation engine's stand-ins (``ToyModel``, ``ToyVideos``,
  ``ToyTokenizer``, ``toy_split``) and ``real_model`` (a registered model on a tiny CLIP);
- ``train_standins``: the training tests' stand-ins (``StandInModel``, ``ToyPairs``, ``cfg``, ...);
- ``decoding``: ``check_decodes``, a full decode of a video file or frame folder;
- ``tiny_clip``: a tiny open_clip backbone and official-layout checkpoints for model tests;
- ``videogen``: small generated videos with known frame contents;
- ``toys``: the toy extensions (a model, a protocol, a post-processor), each in one file, that
  ``tests/test_extensions.py`` runs and ``docs/EXTENDING.md`` shows.

Each helper asserts its own preconditions.
"""
