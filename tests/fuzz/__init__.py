"""Fuzzing support shared by ``tests/test_fuzz.py`` (bounded, seeded, in CI)
and ``tools/fuzz.py`` (long coverage-guided campaigns, by hand).

``seeds``: real datagrams captured from the in-memory client/server link
(PSK and ECDHE-ECDSA) and real keys/certificates, the seed corpus.
``mutate``: a seeded, DTLS-record-aware mutator (bit flips, truncation,
length-field, epoch and sequence edits, record splicing and duplication) and
a PEM/DER mutator. ``targets``: each entry point wrapped with the invariants
every outcome must satisfy. See ``tests/fuzz/README.md``.
"""
