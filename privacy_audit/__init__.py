"""Privacy audit: copy detection, membership inference, metadata leakage, and the release gate."""
