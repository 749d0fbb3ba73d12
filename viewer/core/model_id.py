"""The "name version" strings that name a model everywhere (``analysis.run.model_id``), split back.

Provenance lines, DICOM SEG algorithm identification and the analysis outputs all need the two
parts; one rule for all: the last word is the version when it starts with a digit ("1", "1.0.1"),
otherwise the whole text is the name and the version is unknown ("").
"""
from __future__ import annotations


def split_model_id(text: str) -> tuple[str, str]:
    head, _, tail = str(text).strip().rpartition(" ")
    if head and tail[:1].isdigit():
        return head, tail
    return str(text).strip(), ""
