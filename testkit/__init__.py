"""What the test suite and the benchmarks share, as a package of its own (tests/ and bench/ import it; no
test module imports another, and nothing puts tests/ on ``sys.path``).

- ``paths``: the repository's root, the demo corpus, ../shared and the socket guard's folder.
- ``helpers``: snapshots of what a store serves, a free port, the real CLI run (and killed at a failpoint),
  what a killed run leaves behind, a real S3 server (SeaweedFS), a small disk, the kernel's session groups.
- ``builds``: a small complete build with hand-made vectors (no model), and its model fingerprint.
- ``documents``: real documents made to be hostile (a Word file that inflates ~30x).
- ``faultproxy``: an HTTP proxy in front of a real S3 server that injects faults on a script.
- ``pii_corpus``: a corpus with planted personal data in several formats.
- ``stub_llm``: an OpenAI-compatible server with hand-computable answers for ragas' prompts.
- ``socket_guard/``: a ``sitecustomize.py`` that refuses and records outbound connections in every Python
  process started with that folder on ``PYTHONPATH``.

Import the modules themselves; this package imports nothing, so that a module needing only a path loads
no store and no model.
"""
