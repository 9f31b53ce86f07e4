"""Releases: the audit gate, exports, datasheet, lineage, and DVC/git versioning."""
