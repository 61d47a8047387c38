"""The `schoolfed` command line."""
