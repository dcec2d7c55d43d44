"""Searching a task's recipe on Ray Tune (``percept tune``): trials are the train stage's loop on
shards without a held-out tuning split, scored on that split; the winner goes through dvc repro."""
