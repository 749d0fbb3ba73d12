"""Seeded fuzzing of the loader and the CLI: corrupted real and demo DICOM mixed with good slices.

``corpus.build_corpus`` writes the folders (same seed, same bytes), ``drive.run_corpus`` runs
scan / load_series / ``lightbox info`` (and on a sample ``analyze`` / ``export``) on each in a
child process with a time limit, and ``drive.format_report`` prints the goals table of issue 16.
``tests/test_fuzz.py`` runs a small slice; ``benchmarks/fuzz.py N`` runs N files.
"""
