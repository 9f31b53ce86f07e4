"""The PS3.15 Annex E attribute list and the scan that finds identifying elements in DICOM."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from privacy_audit.phi import (
    CONDITION_KEYWORDS,
    KEYWORDS,
    PROFILE,
    describe,
    identifying_elements,
    is_identifying,
    profile_attribute,
)


def test_table_is_the_full_profile() -> None:
    assert len(PROFILE) > 600
    expected = {
        "PatientName": "Z",
        "PatientBirthDate": "Z",
        "PatientAge": "X",
        "PatientAddress": "X",
        "AccessionNumber": "Z",
        "InstitutionName": "X/Z/D",
        "ReferringPhysicianName": "Z",
        "StudyInstanceUID": "U",
        "SOPInstanceUID": "U",
        "OtherPatientIDs": "X",
        "ContentSequence": "D",
    }
    for keyword, action in expected.items():
        assert PROFILE[KEYWORDS[keyword]].action == action, keyword
    assert all(
        p.action in {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
        for p in PROFILE.values()
    )


def test_keywords_agree_with_pydicom_dictionary() -> None:
    known = [p for p in PROFILE.values() if keyword_for_tag(p.tag)]
    assert len(known) > 600
    assert all(keyword_for_tag(p.tag) == p.keyword for p in known)


def test_repeating_groups_and_private_tags() -> None:
    assert profile_attribute(0x60023000).keyword == "OverlayData"
    assert profile_attribute(0x50100200).keyword == "CurveData"
    assert is_identifying(0x00091001)  # private element
    assert not is_identifying(0x00280010)  # Rows
    assert not is_identifying(0x7FE00010)  # Pixel Data


def identified(ds: Dataset, **kwargs) -> set[str]:
    return {keyword for _, keyword in identifying_elements(ds, **kwargs)}


def test_finds_elements_in_meta_and_nested_sequences() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = ""  # present but emptied (action Z): not identifying
    ds.Rows = 4
    ds.PatientSex = "F"
    ds.PatientAge = "004Y"
    item = Dataset()
    item.ReferringPhysicianName = "Who^Dr"
    ds.RequestAttributesSequence = Sequence([item])
    ds.OtherPatientIDsSequence = Sequence([])  # empty sequence: nothing to leak
    ds.add_new(0x60003000, "OW", b"\x00\x01")  # overlay data (could hold burnt-in text)
    ds.add_new(0x00290010, "LO", "ACME private")
    found = identified(ds)
    assert found == {
        "MediaStorageSOPInstanceUID",
        "PatientName",
        "PatientSex",
        "PatientAge",
        "RequestAttributesSequence",
        "ReferringPhysicianName",
        "OverlayData",
        "private",
    }
    assert identified(ds, allow=CONDITION_KEYWORDS, include_private=False) == found - {
        "PatientSex",
        "PatientAge",
        "private",
    }
    assert "(0010,0010) PatientName" in describe(identifying_elements(ds))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"])
def test_removing_what_it_finds_leaves_nothing(name: str) -> None:
    """What an exporter does: drop every element the scan names, then scan again."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    found = identifying_elements(ds)
    assert any(k == "PatientName" for _, k in found) or any(k == "PatientID" for _, k in found)

    def strip(dataset: Dataset) -> None:
        for element in list(dataset):
            if is_identifying(element.tag):
                del dataset[element.tag]
            elif element.VR == "SQ":
                for child in element.value:
                    strip(child)

    strip(ds)
    strip(ds.file_meta)
    assert identifying_elements(ds) == []
    assert "Rows" in ds or name == "rtplan.dcm"
