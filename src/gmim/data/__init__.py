"""Data: where cases come from (:mod:`.sources`), how they are loaded and preprocessed (:mod:`.transforms`)."""
