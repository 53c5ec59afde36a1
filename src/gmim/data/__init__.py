"""Data: where cases come from (:mod:`.sources`), how they are loaded and preprocessed (:mod:`.transforms`),
the prepared store that pre-training reads crops from (:mod:`.store`) and fine-tuning's caches (:mod:`.caching`)."""
