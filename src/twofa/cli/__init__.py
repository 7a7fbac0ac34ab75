"""The `twofa` command."""
