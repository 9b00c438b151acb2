"""Dataset sources: every non-underscore module here registers datasets with `bench.data`."""
