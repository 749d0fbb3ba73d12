"""Key images for the PACS: a DICOM Key Object Selection document (KOS, TID 2010, "Of Interest").

Other viewers and the archive know a KOS as "the images the reader flagged"; it references the
acquired images by SOP Instance UID, so only key images with one are listed (a reformat or a
NIfTI slice has none: ``KeyObjectError`` says so when nothing is left). The headers of the
referenced files become the document's evidence (highdicom copies patient and study from them);
no pixels are read. Written atomically. Unlike the PNG export this is not de-identified: it
belongs to the patient's study, like the images it points at.
"""
from __future__ import annotations

from pathlib import Path

from ..atomic import replacing
from ..errors import LightboxError
from ..key_images import KeyImage

OF_INTEREST = ("113000", "DCM", "Of Interest")  # CID 7010


class KeyObjectError(LightboxError, ValueError):
    """The document cannot be written; the message says why in words a user can act on."""


def _kos_series_uid(study_uid: str) -> str:
    """The same KOS series for a study's documents, session after session."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["lightbox key images", str(study_uid)])


def write_key_object(keys: list[KeyImage], files: dict[str, Path], path, description: str | None = None) -> Path:
    """Write a KOS referencing each key image's SOP instance; ``files`` maps SOP Instance UID -> its file."""
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    wanted = list(dict.fromkeys(k.sop_uid for k in keys if k.sop_uid))
    missing = [uid for uid in wanted if uid not in files]
    if missing:
        raise KeyObjectError(f"{len(missing)} key image(s) point at files that are not open (e.g. {missing[0]})")
    if not wanted:
        raise KeyObjectError("No key image is an acquired DICOM image (reformats and non-DICOM files cannot "
                             "be referenced): nothing to write")
    evidence = []
    for uid in wanted:
        try:
            evidence.append(pydicom.dcmread(files[uid], stop_before_pixels=True))
        except Exception as exc:  # noqa: BLE001 - one line naming the file
            raise KeyObjectError(f"{files[uid]}: not readable as DICOM ({exc})") from exc
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise KeyObjectError(f"Key images of {len(studies)} studies: a key object document lists one study")
    notes = "; ".join(k.note.strip() for k in keys if k.sop_uid and k.note.strip())
    content = hd.ko.KeyObjectSelection(document_title=hd.sr.CodedConcept(*OF_INTEREST),
                                       referenced_objects=evidence,
                                       description=(description or notes or None))
    doc = hd.ko.KeyObjectSelectionDocument(evidence=evidence, content=content,
                                           series_instance_uid=_kos_series_uid(studies.pop()), series_number=9901,
                                           sop_instance_uid=generate_uid(), instance_number=1,
                                           manufacturer="Lightbox")
    path = Path(path)
    with replacing(path) as tmp:
        doc.save_as(tmp, enforce_file_format=True)
    return path
