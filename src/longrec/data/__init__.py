"""Data: readers, Corpus (CSR arrays + id maps), named datasets, splits and batch loaders."""
