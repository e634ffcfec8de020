"""The shipped NVSwitch SXid table is the pinned file and loads completely."""

from __future__ import annotations

from fleetops.sxid_catalog import SHA256, file_sha256, load_sxid_catalog


def test_file_matches_recorded_hash() -> None:
    for name, digest in SHA256.items():
        assert file_sha256(name) == digest, name


def test_table_loads_every_code_with_its_class() -> None:
    catalog = load_sxid_catalog()
    assert len(catalog) == 92
    assert catalog.codes()[0] == 10001
    ltssm = catalog.get(20034)
    assert ltssm is not None
    assert (ltssm.name, ltssm.section, ltssm.fatal) == ("LTSSM Fault Up", "fatal", True)
    priv = catalog.get(12028)
    assert priv is not None
    assert (priv.section, priv.fatal) == ("non_fatal", False)
    seq = catalog.get(12020)
    assert seq is not None
    assert (seq.section, seq.fatal) == ("always_fatal", True)
    unhandled = catalog.get(10003)
    assert unhandled is not None
    assert (unhandled.section, unhandled.fatal) == ("notable", True)
    assert catalog.get(99999) is None
