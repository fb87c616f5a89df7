"""`paraphrase-pipe train`: continual training of Mamba / hybrid models on build outputs.

config (TrainConfig, recipes) -> data (manifest, token cache) -> packing (windows with seq_idx, mixture)
-> model (load + SummedCausalLMLoss, fused chunked cross-entropy in loss) -> distributed (DDP / FSDP2)
-> loop (steps, schedule, validation) -> checkpoint (exact resume) / metrics (jsonl, TensorBoard, PNG).
"""
