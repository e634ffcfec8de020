"""The shipped XID catalog is the pinned edition and loads completely."""

from __future__ import annotations

from fleetops.xid_catalog import SHA256, file_sha256, load_catalog


def test_files_match_recorded_hashes() -> None:
    for name, digest in SHA256.items():
        assert file_sha256(name) == digest, name


def test_catalog_loads_every_code() -> None:
    catalog = load_catalog()
    assert len(catalog) == 172
    assert catalog.codes()[0] == 1
    assert catalog.codes()[-1] == 172
    entry = catalog.get(79)
    assert entry is not None
    assert entry.mnemonic == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert entry.immediate == "RESTART_BM"
    assert set(entry.applies_to) == {"A100", "H100", "B100", "GB200"}
    assert catalog.get(9999) is None


def test_buckets_and_nvlink_decode_table() -> None:
    catalog = load_catalog()
    assert "WORKFLOW_XID_48" in catalog.buckets
    assert "RESET_GPU" in catalog.buckets
    rows = [row for row in catalog.nvlink_decode if row.xid == 144]
    assert rows
    assert all(row.immediate for row in rows)
    assert {row.xid for row in catalog.nvlink_decode} == set(range(144, 151))
