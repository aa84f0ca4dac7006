"""Full-size evaluation of a run's checkpoint: greedy generation with a KV cache, exact
match and pass@1 (programs run in a bubblewrap sandbox), and a pairwise LLM-as-judge
win-rate."""
