"""Pure stages over Arrow tables: documents -> chunks -> paraphrases -> filtered -> composed samples."""
