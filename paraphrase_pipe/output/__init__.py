"""Writing the build output: Arrow shards committed atomically, the manifest, the dead-letter shards."""
