"""Default datasets, tasks and sweeps of `paraphrase-pipe eval`, in one import-light place (the CLI reads them
without loading torch)."""

# Recall-intensive benchmarks of the Based and JRT papers (split "validation"; the datasets behind lm-eval's swde,
# fda and squad_completion tasks). NQ is published pre-cut at 512/1024/2048 tokens: the longest is the default.
JRT_DATASETS = {
    "swde": "hazyresearch/based-swde-v2",
    "fda": "hazyresearch/based-fda",
    "squad": "hazyresearch/based-squad",
    "triviaqa": "hazyresearch/based_triviaqa",
    "nq": "hazyresearch/based_nq_2048",
    "drop": "hazyresearch/based_drop",
}
RECALL_LENGTHS = (512, 1024, 2048, 4096, 8192)
SYNTHETIC_TASKS = ("mqar", "phonebook", "passkey")
SYNTHETIC_EXAMPLES = {"mqar": 50, "phonebook": 100, "passkey": 100}  # per task and length
# Zero-shot commonsense set of the Mamba papers (and of the hybrid paper's commonsense axis).
COMMONSENSE_TASKS = ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande", "openbookqa")
LONGCTX_SOURCE = "emozilla/pg19-test"  # PG-19's 100 test books, parquet with a `text` column
LONGCTX_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
LONGCTX_WINDOWS = 64
