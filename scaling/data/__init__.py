"""The data layer: corpus -> tokenizer -> token shards, and the objective's examples.

    corpus.py      the embedded default corpus
    tokenizer.py   train a tokenizer (BPE, unigram) or use bytes; the fast exact encoder
    spm.py         a SentencePiece .model the user brings
    tokenizer_files.py  a tokenizer on disk: the user's file, or a shard directory's
    prepare.py     a corpus to token shards (`scaling prepare`)
    layout.py      what a shard directory holds on disk
    shards.py      token shards read (TokenShards) and found (resolve_data)
    objectives.py  the AlexaTM mixed objective, a batch at a time (numpy)
    tasks.py       downstream task files (.jsonl), read, checked and cut to a run's window
    builtin_tasks.py  docsum and nextsent, drawn from a shard directory's validation split
"""
