"""Analysis of the model types (`paraphrase-pipe analyze`): cosine similarity of block outputs across depth, and
the recall drop when a block or a parallel branch is removed. Works on any Hugging Face causal LM whose blocks sit in
one `nn.ModuleList`; branch-level parts need our hybrids' `forward_hidden` / `ablate`."""
