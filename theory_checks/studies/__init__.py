"""Studies beyond the paper's own experiments: S1 (`oversquashing`), over-squashing measured
directly in real LLMs at long context (the `llm-long` profile), with its prose `passage`."""
