"""The data contract, bottom up: readers; one module per dataset (ellipse, asap) declaring a Dataset (dataset) and its
split protocol (protocols, splits); the one tuple of datasets (registry) and the whole params schema (params); fetch,
clean, the prepared essays (corpus) and prompt topic clusters (topics)."""
